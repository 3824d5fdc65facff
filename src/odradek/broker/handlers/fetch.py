"""Fetch (API key 1), versions 4-18.

Reads each requested partition from its fetch offset, at most `partition_max_bytes` per
partition and about `max_bytes` in all, or the broker's `fetch.max.bytes` if lower (the first
partition with data always gets at least one whole batch, KIP-74), never past the high watermark (read_uncommitted) or the last stable offset
(read_committed, which also gets the aborted transactions of the range so that the client drops
their records). Reading starts at the batch holding the fetch offset; the client skips records
before its offset. Unlike Kafka, a partition's records end at a batch boundary: the batch a byte
limit cuts is left for the next fetch instead of being sent in part and dropped by the client
(`segment.whole_batches`); a later partition whose first batch does not fit gets no records.
When fewer than `min_bytes` are ready, the request long-polls up to `max_wait` and is woken by
the first append to any of its partitions. Fetch sessions (KIP-227, v7+) let fetchers send only
what changed; v13+ name topics by id (KIP-516).
In cluster mode a fetch from a follower broker (replica id >= 0; v15+ in ReplicaState) reads up
to the log end offset, reports the follower's position to the partition's leader state (which
may move the ISR and the high watermark), and gets a diverging epoch (v12+) instead of records
when its log disagrees with the leader's epochs. A consumer fetching from a broker that does not
lead the partition gets NOT_LEADER_OR_FOLLOWER with the current leader (v12+, KIP-951).
Errors: OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID,
NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, FETCH_SESSION_ID_NOT_FOUND,
INVALID_FETCH_SESSION_EPOCH, KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

from dataclasses import dataclass

from odradek.broker.connection import EncodedResponse
from odradek.broker.fetch_session import FINAL_EPOCH, INITIAL_EPOCH, CachedPartition
from odradek.protocol import fetch_response
from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import monotonic_ms
from odradek.storage.segment import whole_batches

READ_COMMITTED = 1


@dataclass(slots=True)
class _Read:
    cached: CachedPartition
    error: ErrorCode
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    region: object = None  # a storage FileRegion (sent with sendfile where possible), or None
    size_bytes: int = 0
    aborted_transactions: list | None = None  # read_committed: (producer id, first offset)
    max_offset: int = -1  # read up to here: the HW, the LSO (read_committed) or, for a follower, the LEO
    diverging_epoch: tuple[int, int] | None = None
    current_leader: tuple[int, int] | None = None


async def handle(request, ctx):
    core = ctx.broker
    by_id = ctx.api_version >= 13
    session_id = getattr(request, "session_id", 0)
    epoch = getattr(request, "session_epoch", FINAL_EPOCH)

    session = None
    if epoch == FINAL_EPOCH or epoch == INITIAL_EPOCH:
        if session_id:
            core.fetch_sessions.close(session_id)
        wanted = _requested(request, by_id)
        if epoch == INITIAL_EPOCH:
            session = core.fetch_sessions.create()
            if session is not None:
                for cached in wanted:
                    session.partitions[(_topic_key(cached, by_id), cached.partition)] = cached
    else:
        found = core.fetch_sessions.lookup(session_id, epoch)
        if isinstance(found, ErrorCode):
            return EncodedResponse(fetch_response.encode(ctx.api_version, 0, found.value, 0, []))
        session = found
        for cached in _requested(request, by_id):
            key = (_topic_key(cached, by_id), cached.partition)
            existing = session.partitions.get(key)
            if existing is None:
                session.partitions[key] = cached
            else:
                existing.fetch_offset = cached.fetch_offset
                existing.partition_max_bytes = cached.partition_max_bytes
                existing.current_leader_epoch = cached.current_leader_epoch
                existing.last_fetched_epoch = cached.last_fetched_epoch
        for forgotten in getattr(request, "forgotten_topics_data", ()):
            topic_key = forgotten.topic_id if by_id else forgotten.topic
            for index in forgotten.partitions:
                session.partitions.pop((topic_key, index), None)
        wanted = list(session.partitions.values())

    incremental = session is not None and epoch > 0
    isolation_level = getattr(request, "isolation_level", 0)
    replica_state = getattr(request, "replica_state", None)
    replica_id = replica_state.replica_id if replica_state is not None else getattr(request, "replica_id", -1)
    deadline_ms = monotonic_ms() + max(0, int(request.max_wait.total_seconds() * 1000))
    # The broker's own `fetch.max.bytes` bounds every response, as Kafka's KafkaApis does.
    max_bytes = min(getattr(request, "max_bytes", 2**31 - 1), core.config.fetch_max_bytes)
    while True:
        reads = [_read(core, cached, isolation_level, replica_id) for cached in wanted]
        _fill(core, reads, max_bytes, isolation_level)
        ready_bytes = sum(r.size_bytes for r in reads)
        remaining_ms = deadline_ms - monotonic_ms()
        if (ready_bytes >= request.min_bytes or remaining_ms <= 0 or not reads
                or any(r.error is not ErrorCode.none for r in reads)):
            break
        partitions = [p for p in (core.replica_manager.get(r.cached.topic, r.cached.partition) for r in reads) if p]
        await core.replica_manager.wait_for_data(partitions, remaining_ms / 1000)

    topics: dict = {}
    for r in reads:
        has_records = r.size_bytes > 0
        if session is not None:
            respond = r.cached.must_respond(r.error, has_records, r.high_watermark,
                                            r.last_stable_offset, r.log_start_offset)
            if incremental and not respond:
                continue
        key = _topic_key(r.cached, by_id)
        topic = topics.get(key)
        if topic is None:
            topic = topics[key] = fetch_response.TopicData(r.cached.topic, r.cached.topic_id)
        topic.partitions.append(fetch_response.PartitionData(
            partition_index=r.cached.partition,
            error_code=r.error.value,
            high_watermark=r.high_watermark,
            last_stable_offset=r.last_stable_offset,
            log_start_offset=r.log_start_offset,
            aborted_transactions=(r.aborted_transactions or []) if isolation_level == READ_COMMITTED else None,
            records=r.region if has_records else b"",
            diverging_epoch=r.diverging_epoch,
            current_leader=r.current_leader,
        ))
    session_id = session.session_id if session is not None else 0
    return EncodedResponse(fetch_response.encode(ctx.api_version, 0, 0, session_id, list(topics.values())))


def _topic_key(cached: CachedPartition, by_id: bool):
    return cached.topic_id if by_id else cached.topic


def _requested(request, by_id: bool) -> list[CachedPartition]:
    wanted = []
    for topic in request.topics:
        name = None if by_id else topic.topic
        topic_id = topic.topic_id if by_id else None
        for p in topic.partitions:
            wanted.append(CachedPartition(
                topic=name, topic_id=topic_id, partition=p.partition, fetch_offset=p.fetch_offset,
                partition_max_bytes=p.partition_max_bytes,
                current_leader_epoch=getattr(p, "current_leader_epoch", -1),
                last_fetched_epoch=getattr(p, "last_fetched_epoch", -1),
            ))
    return wanted


def _read(core, cached: CachedPartition, isolation_level: int, replica_id: int) -> _Read:
    if cached.topic_id is not None and cached.topic is None:
        topic = core.image.topics_by_id.get(cached.topic_id)
        if topic is None:
            return _Read(cached, ErrorCode.unknown_topic_id)
        cached.topic = topic.name
    else:
        topic = core.image.topics_by_name.get(cached.topic)
        if topic is None:
            return _Read(cached, ErrorCode.unknown_topic_or_partition)
    partition = core.replica_manager.leader_partition(topic.name, cached.partition, cached.current_leader_epoch)
    if isinstance(partition, ErrorCode):
        r = _Read(cached, partition)
        if partition is ErrorCode.not_leader_or_follower and core.cluster is not None:
            r.current_leader = topic.current_leader(cached.partition)
        return r
    log = partition.log
    if replica_id >= 0:
        result = core.replica_manager.on_follower_fetch(partition, replica_id, cached.fetch_offset,
                                                        cached.last_fetched_epoch, cached.current_leader_epoch)
        if result.error is not ErrorCode.none:
            return _Read(cached, result.error)
        r = _Read(cached, ErrorCode.none, result.high_watermark, log.last_stable_offset, log.log_start_offset,
                  max_offset=log.log_end_offset)
        if result.diverging_epoch is not None:
            r.diverging_epoch = result.diverging_epoch
            r.max_offset = cached.fetch_offset  # no records: the follower truncates first
        return r
    max_offset = log.last_stable_offset if isolation_level == READ_COMMITTED else log.high_watermark
    return _Read(cached, ErrorCode.none, log.high_watermark, log.last_stable_offset, log.log_start_offset,
                 max_offset=max_offset)


def _fill(core, reads: list[_Read], max_bytes: int, isolation_level: int) -> None:
    budget = max_bytes
    min_one_message = True
    for r in reads:
        if r.error is not ErrorCode.none:
            continue
        partition = core.replica_manager.get(r.cached.topic, r.cached.partition)
        limit = min(r.cached.partition_max_bytes, budget)
        if limit <= 0 and not min_one_message:
            continue
        try:
            result = partition.log.read(r.cached.fetch_offset, max(limit, 0), max_offset=r.max_offset,
                                        min_one_message=min_one_message)
            if result.error is not ErrorCode.none:
                r.error = result.error
                continue
            region = whole_batches(result.region) if result.region is not None else None
            if region is not None and region.size_bytes:
                r.region, r.size_bytes = region, region.size_bytes
                if isolation_level == READ_COMMITTED:
                    # Bounded by the LSO rather than the region's last offset: an entry past
                    # the data sent is never matched by the client (as Kafka's segment bound).
                    r.aborted_transactions = partition.log.collect_aborted_transactions(
                        r.cached.fetch_offset, r.last_stable_offset)
        except OSError as exc:
            core.storage_error(partition, exc)
            r.error = ErrorCode.kafka_storage_error
            continue
        if r.size_bytes:
            budget -= r.size_bytes
            min_one_message = False
