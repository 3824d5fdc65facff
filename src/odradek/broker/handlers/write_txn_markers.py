"""WriteTxnMarkers (API key 27), version 1.

Writes end-transaction markers: for each marker (producer id, producer epoch, commit or abort,
coordinator epoch) a COMMIT or ABORT control batch is appended to each named partition this
broker leads (`odradek.broker.txn_markers.write_markers`). A transaction coordinator on another
broker sends it when a transaction ends; `odradek transactions abort` (as Kafka's
kafka-transactions.sh) sends it to abort a hanging transaction by hand.

Kafka authorizes this request with CLUSTER_ACTION on the cluster; we have no ACLs yet, so every
principal is served (see SKIPPED.md for authorization).
Errors per partition (Kafka's): UNKNOWN_TOPIC_OR_PARTITION (no such topic or partition),
NOT_LEADER_OR_FOLLOWER (not led here), INVALID_PRODUCER_EPOCH (an epoch older than the log's),
TRANSACTION_COORDINATOR_FENCED (a coordinator epoch older than the producer's last marker),
KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

from odradek.broker.txn_markers import write_markers


async def handle(request, ctx):
    results = []
    for marker in request.markers:
        requested = [(t.name, int(p)) for t in marker.topics for p in t.partition_indexes]
        errors = await write_markers(
            ctx.broker,
            int(marker.producer_id),
            int(marker.producer_epoch),
            bool(marker.transaction_result),
            int(marker.coordinator_epoch),
            dict.fromkeys(requested),  # a partition named twice gets one marker
        )
        results.append(
            ctx.entity(
                "WritableTxnMarkerResult",
                producer_id=marker.producer_id,
                topics=tuple(
                    ctx.entity(
                        "WritableTxnMarkerTopicResult",
                        name=t.name,
                        partitions=tuple(
                            ctx.entity(
                                "WritableTxnMarkerPartitionResult",
                                partition_index=p,
                                error_code=errors[(t.name, int(p))],
                            )
                            for p in t.partition_indexes
                        ),
                    )
                    for t in marker.topics
                ),
            )
        )
    return ctx.response(markers=tuple(results))
