"""Produce (API key 0), versions 3-13 (0-2 advertised for librdkafka's sake and refused when used).

Appends each partition's record batch to its log and answers with the base offset of the
append. A v3+ request carries exactly one RecordBatch (magic 2) per partition. The broker checks
its header, its CRC-32C and (CreateTime topics) its timestamps against
`message.timestamp.before/after.max.ms`, all from the header, and writes it as received with base
offset and leader epoch patched in place. Only two topic settings make it read the records: a
compacted topic refuses a record without a key, and a `compression.type` other than `producer`
recompresses a batch of another codec (at the topic's compression.*.level).
acks=0 gets no response, and an error closes the connection (as in
Kafka: the client has no other way to learn of it); acks=1 answers after the local append;
acks=-1 waits until the high watermark passes the append (at once on a single node). v13 names
topics by id (KIP-516).
Transactional batches (request with a transactional id) join the producer's open transaction.
KIP-890 verification: before the first transactional batch of a producer epoch on a partition is
appended, the transaction coordinator must confirm the partition was added to the transaction
(in process on a single node); otherwise INVALID_TXN_STATE, and the coordinator's retriable
answers become NOT_ENOUGH_REPLICAS (as Kafka, so that older clients retry without a metadata
refresh).
In cluster mode a partition this broker does not lead gets NOT_LEADER_OR_FOLLOWER with its current
leader and that leader's endpoint (v10+, KIP-951), so the client moves at once.
Errors: INVALID_REQUIRED_ACKS, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID, CORRUPT_MESSAGE,
INVALID_TOPIC_EXCEPTION (a client appending to an internal topic),
INVALID_RECORD (also an unknown compression codec), INVALID_TIMESTAMP, UNSUPPORTED_COMPRESSION_TYPE (zstd before v7),
UNSUPPORTED_FOR_MESSAGE_FORMAT, MESSAGE_TOO_LARGE, OUT_OF_ORDER_SEQUENCE_NUMBER,
INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED (transactional
records without a transactional id: the whole request), NOT_ENOUGH_REPLICAS (transaction verification could
not answer), KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from odradek.broker.connection import CloseConnection
from odradek.broker.core import INTERNAL_TOPICS
from odradek.protocol import records
from odradek.protocol.compression import TOPIC_CODECS, Compression
from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms as clock_now_ms

VALID_ACKS = (-1, 0, 1)
FIRST_ZSTD_VERSION = 7  # KIP-110: older Produce versions may not carry zstd batches
# Kafka lets only its own admin tooling (this client id) append to internal topics.
ADMIN_CLIENT_ID = "__admin_client"


async def handle(request, ctx):
    core = ctx.broker
    now_ms = clock_now_ms()
    by_id = ctx.api_version >= 13
    acks = request.acks
    # A partition named twice is appended once, with its last records, as Kafka's map of
    # partition -> records does.
    last_occurrence = {}
    for t, topic in enumerate(request.topic_data):
        for p, data in enumerate(topic.partition_data):
            last_occurrence[(topic.topic_id if by_id else topic.name, data.index)] = (t, p)
    # As Kafka: transactional records in a request without a transactional id fail its
    # authorization, so every partition of the request is refused.
    refuse_all = request.transactional_id is None and _has_transactional_batch(request)
    timeout_ms = max(0, int(request.timeout.total_seconds() * 1000))
    # Every partition is appended first; acks=all answers (cluster mode) are awaited together.
    # (request topic, its TopicImage or None, [(partition index, outcome or future)])
    answered: list[tuple[object, object, list]] = []
    for t, topic in enumerate(request.topic_data):
        if by_id:
            topic_image = core.image.topics_by_id.get(topic.topic_id)
            unknown = ErrorCode.unknown_topic_id
        else:
            topic_image = core.image.topics_by_name.get(topic.name)
            unknown = ErrorCode.unknown_topic_or_partition
        outcomes = []
        for p, data in enumerate(topic.partition_data):
            if last_occurrence[(topic.topic_id if by_id else topic.name, data.index)] != (t, p):
                continue
            if acks not in VALID_ACKS:
                outcome = (ErrorCode.invalid_required_acks, None, None)
            elif refuse_all:
                outcome = (ErrorCode.transactional_id_authorization_failed,
                           "transactional records need a transactional id", None)
            elif topic_image is None or data.index not in topic_image.partitions:
                outcome = (unknown, None, None)
            elif topic_image.name in INTERNAL_TOPICS and ctx.client_id != ADMIN_CLIENT_ID:
                outcome = (ErrorCode.invalid_topic_exception,
                           f"Cannot append to internal topic {topic_image.name}", None)
            else:
                outcome = await _append(core, topic_image, data, now_ms, ctx.api_version,
                                        request.transactional_id, acks, timeout_ms)
            outcomes.append((data.index, outcome))
        if outcomes:
            answered.append((topic, topic_image, outcomes))
    topic_responses = []
    leaders: set[int] = set()  # KIP-951: the current leaders named in NOT_LEADER_OR_FOLLOWER answers
    for topic, topic_image, outcomes in answered:
        partition_responses = []
        for index, outcome in outcomes:
            if isinstance(outcome, asyncio.Future):
                result = await outcome
                outcome = (result.error, result.error_message, result)
            response = _partition_response(ctx, index, *outcome)
            if outcome[0] is ErrorCode.not_leader_or_follower and core.cluster is not None:
                current = topic_image.current_leader(index)
                if current is not None:
                    leaders.add(current[0])
                    response = dataclasses.replace(response, current_leader=ctx.entity(
                        "LeaderIdAndEpoch", leader_id=current[0], leader_epoch=current[1]))
            partition_responses.append(response)
        topic_responses.append(ctx.entity(
            "TopicProduceResponse",
            name=None if by_id else topic.name,
            topic_id=topic.topic_id if by_id else None,
            partition_responses=tuple(partition_responses),
        ))
    if acks == 0:
        failed = [(t.name or t.topic_id, p.index, p.error_code) for t in topic_responses
                  for p in t.partition_responses if p.error_code is not ErrorCode.none]
        if failed:
            return CloseConnection(f"acks=0 produce failed: {failed[0][0]}-{failed[0][1]} "
                                   f"{failed[0][2].name}")
        return None
    node_endpoints = ()
    if leaders:
        described = {node_id: (host, port, rack)
                     for node_id, host, port, rack in core.described_brokers(ctx.client.listener_name)}
        node_endpoints = tuple(
            ctx.entity("NodeEndpoint", node_id=n, host=described[n][0], port=described[n][1],
                       rack=described[n][2])
            for n in sorted(leaders) if n in described)
    return ctx.response(responses=tuple(topic_responses), throttle_time=timedelta(0),
                        node_endpoints=node_endpoints)


async def _append(core, topic_image, data, now_ms, api_version, transactional_id, acks, timeout_ms):
    """(error, message, result) when answered, or a future of the AppendResult (acks=all in
    cluster mode)."""
    partition = core.replica_manager.get(topic_image.name, data.index)
    if partition is None:
        return ErrorCode.not_leader_or_follower, None, None
    raw = data.records
    if not raw:
        return ErrorCode.invalid_record, "produce request without records", None
    # As Kafka: the whole batch, its 12-byte log overhead included, against max.message.bytes.
    max_message_bytes = partition.log.config.max_message_bytes
    if len(raw) > max_message_bytes:
        return (ErrorCode.message_too_large,
                f"batch of {len(raw)} bytes exceeds max.message.bytes {max_message_bytes}", None)
    header = records.validate_batch(raw, 0, len(raw))
    if isinstance(header, records.BatchError):
        return header.error, header.message, None
    if header.size_bytes != len(raw):
        return ErrorCode.invalid_record, "a produce request carries exactly one record batch per partition", None
    if header.compression > Compression.ZSTD:
        # Kafka's CompressionType.forId throws (the client sees UNKNOWN_SERVER_ERROR there);
        # INVALID_RECORD says the same without suggesting a broker fault.
        return ErrorCode.invalid_record, f"unknown compression type id {header.compression}", None
    if header.compression == Compression.ZSTD and api_version < FIRST_ZSTD_VERSION:
        return (ErrorCode.unsupported_compression_type,
                f"zstd needs Produce v{FIRST_ZSTD_VERSION}+ (KIP-110)", None)
    if header.is_control:
        return ErrorCode.invalid_record, "clients may not write control batches", None
    refused = _check_timestamps(header, partition.log.config, now_ms)
    if refused is not None:
        return ErrorCode.invalid_timestamp, refused, None
    if partition.log.config.compacted:
        refused = _check_keys(raw, partition)
        if refused is not None:
            return ErrorCode.invalid_record, refused, None
    target = _target_codec(partition.log.config, header.compression)
    if target is not None:
        try:
            raw = records.recompress(raw, target, _level(partition.log.config, target),
                                     _max_decompressed_bytes(max_message_bytes))
        except ValueError as exc:
            return ErrorCode.corrupt_message, f"cannot recompress the batch to the topic's codec: {exc}", None
        if len(raw) > max_message_bytes:
            return (ErrorCode.message_too_large,
                    f"batch of {len(raw)} bytes after recompression exceeds max.message.bytes "
                    f"{max_message_bytes}", None)
        header = records.read_header(raw, 0)
    if header.is_transactional:
        refused = await _verify_transaction(core, partition, header, transactional_id)
        if refused is not None:
            return refused
    result, acked = await core.replica_manager.append_local(
        partition, bytearray(raw), header, now_ms, required_acks=acks, timeout_ms=timeout_ms)
    if acked is not None:
        return acked
    return result.error, result.error_message, result


def _check_timestamps(header, config, now_ms: int) -> str | None:
    """Why the batch's timestamps are refused (INVALID_TIMESTAMP), or None; as Kafka's
    LogValidator for CreateTime topics, from the batch header: its max timestamp against
    `message.timestamp.after.max.ms` (exact: the max covers every record) and its first
    timestamp against `message.timestamp.before.max.ms` (a later record stamped earlier than
    the first is not seen; Kafka checks each record). LogAppendTime topics stamp the broker's
    clock and check nothing; a producer may not claim LogAppendTime on a CreateTime topic."""
    if config.log_append_time:
        return None
    if header.timestamp_type == records.TimestampType.LOG_APPEND_TIME:
        return "Producer should not set timestamp type to LogAppendTime."
    earliest = now_ms - config.message_timestamp_before_max_ms
    latest = now_ms + config.message_timestamp_after_max_ms
    for timestamp in (header.max_timestamp, header.base_timestamp):
        if timestamp != records.NO_TIMESTAMP and not earliest <= timestamp <= latest:
            return (f"Timestamp {timestamp} of the batch at offset {header.base_offset} is out of range. "
                    f"The timestamp should be within [{earliest}, {latest}]")
    return None


def _check_keys(raw, partition) -> str | None:
    """Why a batch for a compacted topic is refused (INVALID_RECORD), or None: as Kafka, every
    record needs a key (compaction keeps the latest value per key). The only produce check that
    reads records, so compacted topics alone pay for it."""
    try:
        for index, record in enumerate(records.iter_records(raw)):
            if record.key is None:
                return (f"Compacted topic cannot accept message without key in topic partition "
                        f"{partition.topic}-{partition.index} (record {index} of the batch).")
    except ValueError as exc:  # malformed records (or a codec bomb) behind a valid CRC
        return f"malformed records: {exc}"
    return None


def _target_codec(config, source: int) -> int | None:
    """The codec a batch must be stored with when it differs from the producer's (Kafka's
    BrokerCompressionType.targetCompression), else None."""
    if config.compression_type == "producer":
        return None
    target = TOPIC_CODECS[config.compression_type]
    return target if target != source else None


def _level(config, codec: int) -> int | None:
    return {Compression.GZIP: config.compression_gzip_level, Compression.LZ4: config.compression_lz4_level,
            Compression.ZSTD: config.compression_zstd_level}.get(codec)


def _max_decompressed_bytes(max_message_bytes: int) -> int:
    # Recompression holds the records uncompressed for a moment: bounded like every broker path
    # that decompresses, and by what the topic could take at a generous 64:1 ratio.
    return min(records.MAX_DECOMPRESSED_BATCH_BYTES, 64 * max(max_message_bytes, 1 << 20))


# Verification answers a producer should retry (Kafka's conversion to NOT_ENOUGH_REPLICAS).
_RETRIABLE_VERIFY_ERRORS = frozenset(e.value for e in (
    ErrorCode.concurrent_transactions, ErrorCode.coordinator_load_in_progress,
    ErrorCode.coordinator_not_available, ErrorCode.not_coordinator, ErrorCode.network_exception))


def _has_transactional_batch(request) -> bool:
    """Whether any partition's records start with a batch whose transactional bit is set (a
    look at one attribute byte pair; the batch is validated later)."""
    for topic in request.topic_data:
        for data in topic.partition_data:
            raw = data.records
            if raw and len(raw) > records.ATTRIBUTES_OFFSET + 1 and (
                    raw[records.ATTRIBUTES_OFFSET + 1] & records.TRANSACTIONAL_MASK):
                return True
    return False


async def _verify_transaction(core, partition, header, transactional_id):
    """KIP-890: the (error, message, None) refusing a transactional batch, or None to append."""
    state = partition.log.producer_state
    entry = state.producers.get(header.producer_id)
    if (header.producer_id in state.ongoing_txns and entry is not None
            and entry.producer_epoch == header.producer_epoch):
        return None  # the transaction is already open on this partition
    error = await core.txns.verify_partition_anywhere(transactional_id, header.producer_id,
                                                      header.producer_epoch, partition.topic,
                                                      partition.index)
    if error == ErrorCode.none.value:
        return None
    if error in _RETRIABLE_VERIFY_ERRORS:
        return (ErrorCode.not_enough_replicas,
                f"cannot verify the partition is in the transaction: {ErrorCode(error).name}", None)
    if error == ErrorCode.transaction_abortable.value:
        return ErrorCode.invalid_txn_state, "the partition was not added to the transaction", None
    if error == ErrorCode.producer_fenced.value:
        return ErrorCode.invalid_producer_epoch, "the producer epoch is fenced", None
    return ErrorCode(error), None, None


def _partition_response(ctx, index, error, message, result):
    log_append_time = None
    if result is not None and result.log_append_time_ms >= 0:
        log_append_time = datetime.fromtimestamp(result.log_append_time_ms / 1000, tz=UTC)
    ok = error is ErrorCode.none and result is not None
    return ctx.entity(
        "PartitionProduceResponse",
        index=index,
        error_code=error,
        base_offset=result.base_offset if ok else -1,
        log_append_time=log_append_time,
        log_start_offset=result.log_start_offset if result is not None else -1,
        record_errors=(),
        error_message=message,
    )
