"""LogConfig: the typed, per-partition view of the topic configs that storage acts on.

`odradek.config` maps Kafka's config names (topic overrides over `log.*` broker defaults) onto
this dataclass; storage reads only these fields. Defaults are Kafka's.
"""

from __future__ import annotations

from dataclasses import dataclass

INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 1024 * 1024 * 1024  # segment.bytes
    segment_ms: int = 7 * 24 * 3600 * 1000  # segment.ms
    segment_jitter_ms: int = 0  # segment.jitter.ms: a random part of segment.ms, drawn per segment
    segment_index_bytes: int = 10 * 1024 * 1024  # segment.index.bytes
    index_interval_bytes: int = 4096  # index.interval.bytes
    flush_messages: int = INT64_MAX  # flush.messages: fsync after this many records
    flush_ms: int = INT64_MAX  # flush.ms: fsync when the oldest unflushed write is this old
    retention_ms: int = 7 * 24 * 3600 * 1000  # retention.ms (-1: unlimited)
    retention_bytes: int = -1  # retention.bytes (-1: unlimited)
    cleanup_policy: tuple[str, ...] = ("delete",)  # cleanup.policy
    max_message_bytes: int = 1048588  # max.message.bytes
    message_timestamp_type: str = "CreateTime"  # message.timestamp.type
    message_timestamp_before_max_ms: int = INT64_MAX  # message.timestamp.before.max.ms
    message_timestamp_after_max_ms: int = 3_600_000  # message.timestamp.after.max.ms (Kafka 4: 1 hour)
    file_delete_delay_ms: int = 60_000  # file.delete.delay.ms
    delete_retention_ms: int = 24 * 3600 * 1000  # delete.retention.ms: tombstones kept this long
    min_compaction_lag_ms: int = 0  # min.compaction.lag.ms
    max_compaction_lag_ms: int = INT64_MAX  # max.compaction.lag.ms
    min_cleanable_dirty_ratio: float = 0.5  # min.cleanable.dirty.ratio
    preallocate: bool = False  # preallocate
    compression_type: str = "producer"  # compression.type: a codec the broker recompresses to, or producer
    compression_gzip_level: int = -1  # compression.gzip.level
    compression_lz4_level: int = 9  # compression.lz4.level
    compression_zstd_level: int = 3  # compression.zstd.level

    @property
    def compacted(self) -> bool:
        """cleanup.policy includes compact (alone or with delete)."""
        return "compact" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"
