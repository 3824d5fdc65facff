"""MetadataStore: the embedded, single-node metadata log and the image replayed from it.

On disk, in the broker's first data directory:

    meta.properties                    Kafka's format: version=1, node.id, cluster.id, directory.id
    __cluster_metadata-0/metadata.log  the metadata records, one frame each:
        length    int32  big-endian, bytes of payload (0 < length <= MAX_RECORD_BYTES)
        crc       uint32 big-endian, CRC-32C of payload
        payload   `records.encode_record` bytes (JSON with a type tag and version)

Opening replays every frame into a MetadataImage. A torn or corrupt tail (short header, bad
length, short payload, CRC mismatch) is cut off at the last good frame, as Kafka truncates a
log at its first invalid batch. A frame with a good CRC that does not decode or apply is not a
torn write: opening fails loudly instead of throwing away records a newer version wrote.

`append(records)` applies the records to a copy of the image first (so an invalid record never
reaches the disk), writes all frames in one write, fsyncs, and only then publishes the new image
(copy-on-write: readers holding the old image are undisturbed) and calls the listeners.
Metadata changes are rare, so durability comes first.

When the log holds more than max(COMPACT_MIN_RECORDS, 2 x the records of the last snapshot),
it is rewritten as the image's own records (`MetadataImage.to_records`) into a temporary file,
fsynced, renamed over the log, and the directory fsynced: a crash leaves either log whole.

The interface the broker uses is small on purpose (`open`, `image`, `append`, `close`,
`listeners`), so the etcd-backed store for clusters can replace this one.
Owned by the BrokerCore: `open`/`close` on the event loop, `append` on its I/O thread, one call
at a time (the core holds a lock around metadata writes).
"""

from __future__ import annotations

import base64
import logging
import json
import os
import struct
import time
import uuid
from typing import Callable, Iterable

import crc32c

from odradek.config import parse_properties
from odradek.metadata.image import Change, MetadataImage
from odradek.metadata.records import MetadataRecord, RecordDecodeError, decode_record, encode_record
from odradek.storage.fs import FileSystem, RealFileSystem

log = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct(">iI")  # length int32, crc32c uint32
MAX_RECORD_BYTES = 1024 * 1024  # bound on one metadata record's payload
MAX_FRAME_BYTES = 64 * 1024 * 1024  # bound on one frame: all the records of one append
COMPACT_MIN_RECORDS = 1000  # never rewrite a log shorter than this
LOG_FILE_NAME = "metadata.log"
META_PROPERTIES = "meta.properties"

Listener = Callable[[MetadataImage, MetadataImage, list[Change]], None]


class MetadataStoreError(Exception):
    """The metadata on disk cannot be used (undecodable record, node or cluster id mismatch)."""


def generate_cluster_id() -> str:
    """A new cluster id as Kafka makes them: a random UUID, base64url without padding (22 chars)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def encode_frame(record: MetadataRecord) -> bytes:
    payload = encode_record(record)
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"metadata record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    return FRAME_HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def encode_batch_frame(records: list[MetadataRecord]) -> bytes:
    """One frame holding all the records of one append, as a JSON array: a torn or corrupt
    frame loses the whole append, never part of it (a topic without its partitions, say)."""
    if len(records) == 1:
        return encode_frame(records[0])
    payload = b"[" + b",".join(encode_record(record) for record in records) + b"]"
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"metadata append of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return FRAME_HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def _decode_payload(payload: memoryview) -> list[MetadataRecord]:
    if payload[:1] != b"[":
        return [decode_record(payload)]
    try:
        items = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordDecodeError(f"metadata batch is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise RecordDecodeError("metadata batch is not an array")
    return [decode_record(json.dumps(item).encode("utf-8")) for item in items]


def read_frames(data: bytes) -> tuple[list[MetadataRecord], int]:
    """Decode the valid prefix of a metadata log: (records, bytes of the valid prefix).

    Stops at the first torn or corrupt frame. Raises MetadataStoreError for a frame whose CRC is
    good but whose payload does not decode.
    """
    records: list[MetadataRecord] = []
    position, size = 0, len(data)
    view = memoryview(data)
    while position + FRAME_HEADER.size <= size:
        length, crc = FRAME_HEADER.unpack_from(view, position)
        end = position + FRAME_HEADER.size + length
        if length <= 0 or length > MAX_FRAME_BYTES or end > size:
            break
        payload = view[position + FRAME_HEADER.size:end]
        if crc32c.crc32c(payload) != crc:
            break
        try:
            records.extend(_decode_payload(payload))
        except RecordDecodeError as exc:
            raise MetadataStoreError(f"metadata log record at byte {position} cannot be read: {exc}") from None
        position = end
    return records, position


def _load_meta_properties(fs: FileSystem, data_dir: str, node_id: int, cluster_id: str | None) -> str:
    """Read or create meta.properties; returns the cluster id. Checks node and cluster ids."""
    path = os.path.join(data_dir, META_PROPERTIES)
    if fs.exists(path):
        props = parse_properties(fs.read_file(path).decode("utf-8", errors="replace"))
        stored_cluster = props.get("cluster.id")
        if not stored_cluster:
            raise MetadataStoreError(f"{path} has no cluster.id")
        stored_node = props.get("node.id", props.get("broker.id"))
        if stored_node is not None and stored_node.strip() != str(node_id):
            raise MetadataStoreError(f"stored node id {stored_node.strip()} in {path} does not match "
                                     f"node.id {node_id}")
        if cluster_id is not None and cluster_id != stored_cluster:
            raise MetadataStoreError(f"cluster.id {cluster_id} does not match the cluster id "
                                     f"{stored_cluster} stored in {path}")
        return stored_cluster
    cluster = cluster_id or generate_cluster_id()
    directory_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
    text = (f"#\n#{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}\n"
            f"cluster.id={cluster}\ndirectory.id={directory_id}\nnode.id={node_id}\nversion=1\n")
    fs.write_file_atomic(path, text.encode("utf-8"))
    return cluster


class MetadataStore:
    """The embedded metadata log (see the module docstring for the layout) and its image.

    Invariants: `image` is the result of applying every record of the log in order (with
    `cluster_id` from meta.properties); the log file's length is `size_bytes` and every byte of
    it is a complete, valid frame. All file access goes through `fs` (storage's FileSystem seam),
    so tests can crash the disk under it.
    """

    def __init__(self, fs: FileSystem, directory: str, image: MetadataImage, fd: int, size_bytes: int,
                 records_in_log: int) -> None:
        self.fs = fs
        self.directory = directory
        self.image = image
        self.listeners: list[Listener] = []
        self.size_bytes = size_bytes
        self.records_in_log = records_in_log
        self._snapshot_records = records_in_log
        self._fd: int | None = fd

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, LOG_FILE_NAME)

    @classmethod
    def open(cls, directory: str | os.PathLike, *, node_id: int = 1, cluster_id: str | None = None,
             fs: FileSystem | None = None) -> "MetadataStore":
        """Open (creating if needed) the metadata log in `directory` and replay it.

        `directory` is `<data dir>/__cluster_metadata-0`; meta.properties lives in its parent.
        Raises MetadataStoreError for unusable metadata, OSError for I/O failures.
        """
        fs = fs or RealFileSystem()
        directory = os.fspath(directory)
        fs.mkdir(directory)
        cluster = _load_meta_properties(fs, os.path.dirname(os.path.abspath(directory)), node_id, cluster_id)
        path = os.path.join(directory, LOG_FILE_NAME)
        created = not fs.exists(path)
        fd = fs.open(path, create=True)
        try:
            data = fs.pread(fd, fs.size(fd), 0)
            records, valid_bytes = read_frames(data)
            image = MetadataImage(cluster_id=cluster)
            for index, record in enumerate(records):
                try:
                    image.apply(record)
                except ValueError as exc:
                    raise MetadataStoreError(f"metadata log record {index} cannot be applied: {exc}") from None
            if valid_bytes < len(data):
                log.warning("metadata log %s: truncating a torn or corrupt tail of %d bytes at byte %d",
                            path, len(data) - valid_bytes, valid_bytes)
                fs.truncate(fd, valid_bytes)
                fs.fsync(fd)
            if created:
                fs.fsync_dir(directory)
        except BaseException:
            fs.close(fd)
            raise
        return cls(fs, directory, image, fd, valid_bytes, len(records))

    def append(self, records: Iterable[MetadataRecord]) -> None:
        """Make `records` durable (write + fsync), then publish the image they produce.

        Raises InvalidMetadataRecord (nothing written) when a record cannot apply, and OSError
        when the write or fsync fails (the log is cut back to its previous length, best effort,
        and the image is unchanged).
        """
        records = list(records)
        if not records:
            return
        assert self._fd is not None, "metadata store is closed"
        new_image = self.image.copy()
        changes = [new_image.apply(record) for record in records]
        data = encode_batch_frame(records)
        try:
            self.fs.pwrite(self._fd, data, self.size_bytes)
            self.fs.fsync(self._fd)
        except OSError:
            try:
                self.fs.truncate(self._fd, self.size_bytes)
            except OSError:
                pass
            raise
        old_image, self.image = self.image, new_image
        self.size_bytes += len(data)
        self.records_in_log += len(records)
        if self.records_in_log > max(COMPACT_MIN_RECORDS, 2 * self._snapshot_records):
            self.compact()
        for listener in list(self.listeners):
            listener(old_image, new_image, changes)

    def compact(self) -> None:
        """Rewrite the log as the image's own records, atomically (temp file, fsync, rename)."""
        assert self._fd is not None, "metadata store is closed"
        records = self.image.to_records()
        data = b"".join(encode_frame(record) for record in records)
        self.fs.write_file_atomic(self.log_path, data)
        self.fs.close(self._fd)
        self._fd = self.fs.open(self.log_path)
        self.size_bytes = len(data)
        self.records_in_log = self._snapshot_records = len(records)

    def close(self) -> None:
        if self._fd is not None:
            self.fs.close(self._fd)
            self._fd = None
