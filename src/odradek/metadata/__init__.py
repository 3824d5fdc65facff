"""Cluster metadata as records applied to an image.

records.py     the records (Kafka's KRaft names) and their versioned encoding
image.py       MetadataImage: what handlers read; apply(record) -> Change
store.py       MetadataStore: the embedded single-node metadata log (etcd for clusters later)
controller.py  the controller's decisions as pure functions of (image, request, broker config)
"""
