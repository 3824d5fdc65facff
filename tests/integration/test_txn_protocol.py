"""Transaction APIs over raw sockets, every version the broker advertises (issue #8):
FindCoordinator (key type 1), InitProducerId (22 v0-5), AddPartitionsToTxn (24 v0-5),
AddOffsetsToTxn (25 v0-4), EndTxn (26 v0-5), TxnOffsetCommit (28 v0-5), and what transactions do
to Produce, Fetch (read_committed: last stable offset, aborted transactions), ListOffsets
(isolation level 1) and OffsetFetch (require_stable). kio-encoded requests, transactional
batches from `records.build_batch`, one broker subprocess for the module.

Timeouts and restarts with open transactions are in test_txn_protocol_recovery.py.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from odradek.protocol import records
from odradek.protocol.apis import make
from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection, request_module

from .txn_helpers import wait_until

NONE = ErrorCode.none
MAX_TXN_TIMEOUT_MS = 60_000
OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "transaction.max.timeout.ms": str(MAX_TXN_TIMEOUT_MS),
}
TXN_TIMEOUT_MS = 50_000  # longer than any test here: the coordinator must not abort on its own
SETTLE_TIMEOUT_S = 10.0  # bound on waiting for markers to be written after EndTxn
PARTITIONS = 2

# Kafka's first version of each API that answers PRODUCER_FENCED (older ones get
# INVALID_PRODUCER_EPOCH): InitProducerId v4, AddPartitionsToTxn / AddOffsetsToTxn / EndTxn v2.
FENCED_SINCE = {22: 4, 24: 2, 25: 2, 26: 2}


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("txn-protocol")), overrides=OVERRIDES) as process:
        with RawConnection(process.bootstrap) as conn:
            # Create and load __transaction_state and __consumer_offsets before any test, so that
            # each test sees a ready coordinator whatever ran before it.
            init_settled(conn, 4, new_tid())
            wait_until(lambda: find_coordinator(conn, 3, "warm-up", key_type=0).error_code is NONE,
                       SETTLE_TIMEOUT_S, "FindCoordinator for a group")
        yield process


@pytest.fixture
def conn(broker):
    with RawConnection(broker.bootstrap) as connection:
        yield connection


@pytest.fixture
def topic(conn):
    return create_topic(conn, f"txp-{uuid.uuid4().hex[:8]}", PARTITIONS)


# --- helpers (also used by test_txn_protocol_recovery.py) ---------------------------------------

def req(api_key: int, version: int, name: str, **fields):
    return make(getattr(request_module(api_key, version), name), **fields)


def new_tid() -> str:
    return f"tx-{uuid.uuid4().hex[:8]}"


def fenced(api_key: int, version: int) -> ErrorCode:
    return ErrorCode.producer_fenced if version >= FENCED_SINCE[api_key] else ErrorCode.invalid_producer_epoch


def create_topic(conn, name: str, partitions: int) -> str:
    m = request_module(19, 7)
    response = conn.request(make(
        m.CreateTopicsRequest,
        topics=(make(m.CreatableTopic, name=name, num_partitions=partitions, replication_factor=1,
                     assignments=(), configs=()),),
        timeout=timedelta(seconds=10),
        validate_only=False,
    ))
    assert response.topics[0].error_code is NONE, response
    return name


def find_coordinator(conn, version: int, key: str, key_type: int = 1):
    if version >= 4:
        return conn.request(req(10, version, "FindCoordinatorRequest", key_type=key_type,
                                coordinator_keys=(key,))).coordinators[0]
    return conn.request(req(10, version, "FindCoordinatorRequest", key=key, key_type=key_type))


def init_producer_id(conn, version: int, tid: str | None, *, timeout_ms: int = TXN_TIMEOUT_MS,
                     producer_id: int = -1, producer_epoch: int = -1):
    return conn.request(req(22, version, "InitProducerIdRequest", transactional_id=tid,
                            transaction_timeout=timedelta(milliseconds=timeout_ms),
                            producer_id=producer_id, producer_epoch=producer_epoch))


def add_partitions(conn, version: int, tid: str, producer_id: int, producer_epoch: int,
                   partitions: dict[str, list[int]], *, verify_only: bool = False) -> dict:
    """AddPartitionsToTxn for one transaction; {(topic, partition): error}."""
    m = request_module(24, version)
    topics = tuple(m.AddPartitionsToTxnTopic(name=t, partitions=tuple(ps)) for t, ps in partitions.items())
    if version >= 4:
        response = conn.request(m.AddPartitionsToTxnRequest(transactions=(m.AddPartitionsToTxnTransaction(
            transactional_id=tid, producer_id=producer_id, producer_epoch=producer_epoch,
            verify_only=verify_only, topics=topics),)))
        assert response.error_code is NONE
        assert [r.transactional_id for r in response.results_by_transaction] == [tid]
        results = response.results_by_transaction[0].topic_results
    else:
        response = conn.request(m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=tid, v3_and_below_producer_id=producer_id,
            v3_and_below_producer_epoch=producer_epoch, v3_and_below_topics=topics))
        results = response.results_by_topic_v3_and_below
    return {(t.name, p.partition_index): p.partition_error_code for t in results for p in t.results_by_partition}


def add_partitions_settled(conn, version, tid, producer_id, producer_epoch, partitions) -> dict:
    """AddPartitionsToTxn, retried while the previous transaction's markers are being written
    (CONCURRENT_TRANSACTIONS, as a client retries it)."""
    def attempt():
        errors = add_partitions(conn, version, tid, producer_id, producer_epoch, partitions)
        return None if ErrorCode.concurrent_transactions in errors.values() else errors
    return wait_until(attempt, SETTLE_TIMEOUT_S, "AddPartitionsToTxn without CONCURRENT_TRANSACTIONS")


def end_txn(conn, version: int, tid: str, producer_id: int, producer_epoch: int, commit: bool):
    return conn.request(req(26, version, "EndTxnRequest", transactional_id=tid, producer_id=producer_id,
                            producer_epoch=producer_epoch, committed=commit))


def txn_batch(values: list[bytes], producer_id: int, producer_epoch: int, base_sequence: int, *,
              transactional: bool = True) -> bytes:
    now_ms = int(time.time() * 1000)
    return records.build_batch([(None, v, [], now_ms) for v in values], producer_id=producer_id,
                               producer_epoch=producer_epoch, base_sequence=base_sequence,
                               transactional=transactional)


def produce(conn, topic: str, partition: int, data: bytes, *, transactional_id: str | None,
            version: int = 9):
    """One Produce request (acks=-1) for one partition; that partition's response."""
    m = request_module(0, version)
    response = conn.request(make(
        m.ProduceRequest, transactional_id=transactional_id, acks=-1, timeout=timedelta(seconds=5),
        topic_data=(m.TopicProduceData(name=topic, partition_data=(
            m.PartitionProduceData(index=partition, records=data),)),),
    ))
    return response.responses[0].partition_responses[0]


def fetch(conn, topic: str, partition: int, offset: int, isolation_level: int, version: int = 12):
    """One Fetch (no wait) of one partition; its PartitionData."""
    m = request_module(1, version)
    response = conn.request(make(
        m.FetchRequest, replica_id=-1, max_wait=timedelta(0), min_bytes=1, max_bytes=1 << 24,
        isolation_level=isolation_level, session_id=0, session_epoch=-1, forgotten_topics_data=(),
        rack_id="",
        topics=(m.FetchTopic(topic=topic, partitions=(make(
            m.FetchPartition, partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20,
            current_leader_epoch=-1, last_fetched_epoch=-1, log_start_offset=-1),)),),
    ))
    assert getattr(response, "error_code", NONE) is NONE
    data = response.responses[0].partitions[0]
    assert data.error_code is NONE, data.error_code
    return data


def latest_offset(conn, topic: str, partition: int, isolation_level: int, version: int = 7) -> int:
    """ListOffsets LATEST: the last stable offset at isolation level 1, else the high watermark."""
    m = request_module(2, version)
    response = conn.request(make(
        m.ListOffsetsRequest, replica_id=-1, isolation_level=isolation_level,
        topics=(m.ListOffsetsTopic(name=topic, partitions=(make(
            m.ListOffsetsPartition, partition_index=partition, current_leader_epoch=-1, timestamp=-1),)),),
    ))
    result = response.topics[0].partitions[0]
    assert result.error_code is NONE, result.error_code
    return result.offset


def batches(data) -> list[tuple[records.BatchHeader, bytes]]:
    raw = bytes(data or b"")
    return [(h, raw[h.position:h.position + h.size_bytes]) for h in records.iter_headers(raw)]


def values_of(data) -> list[bytes]:
    return [r.value for h, b in batches(data) if not h.is_control for r in records.iter_records(b)]


def markers_of(data) -> list[tuple[int, bool]]:
    """(base offset, commit) of each end-transaction marker in fetched bytes."""
    found = []
    for h, b in batches(data):
        if h.is_control:
            marker = records.parse_end_txn_marker(b)
            assert marker is not None
            found.append((h.base_offset, marker.commit))
    return found


RETRIABLE_INIT_ERRORS = (ErrorCode.coordinator_not_available, ErrorCode.not_coordinator,
                         ErrorCode.coordinator_load_in_progress, ErrorCode.concurrent_transactions)


def init_settled(conn, version: int, tid: str, *, timeout_ms: int = TXN_TIMEOUT_MS):
    """FindCoordinator (until it answers), then InitProducerId until it answers other than with a
    retriable error (a fresh broker creates and loads `__transaction_state` first)."""
    wait_until(lambda: find_coordinator(conn, 3, tid).error_code is NONE, SETTLE_TIMEOUT_S,
               "FindCoordinator for a transactional id")

    def attempt():
        response = init_producer_id(conn, version, tid, timeout_ms=timeout_ms)
        return None if response.error_code in RETRIABLE_INIT_ERRORS else response
    init = wait_until(attempt, SETTLE_TIMEOUT_S, "InitProducerId without a retriable error")
    assert init.error_code is NONE, init
    return init


def begin(conn, tid: str, topic: str, partitions=(0,), *, init_version: int = 4, add_version: int = 3,
          timeout_ms: int = TXN_TIMEOUT_MS) -> tuple[int, int]:
    """FindCoordinator, InitProducerId (retried on retriable errors, as a client does) and
    AddPartitionsToTxn; (producer id, epoch) of a transaction now open."""
    init = init_settled(conn, init_version, tid, timeout_ms=timeout_ms)
    errors = add_partitions(conn, add_version, tid, init.producer_id, init.producer_epoch,
                            {topic: list(partitions)})
    assert set(errors.values()) == {NONE}, errors
    return init.producer_id, init.producer_epoch


def reinit_over_open_transaction(conn, tid: str, version: int = 4):
    """InitProducerId while the id's transaction is open. Kafka fences the open transaction
    (epoch + 1, the abort markers carry it) and answers CONCURRENT_TRANSACTIONS; the retry, once
    the abort is complete, bumps again (epoch + 2)."""
    first = init_producer_id(conn, version, tid)
    assert first.error_code is ErrorCode.concurrent_transactions, first
    return wait_until(lambda: (r := init_producer_id(conn, version, tid)).error_code is NONE and r,
                      SETTLE_TIMEOUT_S, "InitProducerId after the abort")


# --- FindCoordinator and InitProducerId ----------------------------------------------------------

@pytest.mark.parametrize("version", range(1, 7))  # key_type exists from v1
def test_find_coordinator_for_a_transactional_id_names_this_broker(broker, conn, version):
    entry = find_coordinator(conn, version, new_tid(), key_type=1)
    assert entry.error_code is NONE
    assert (entry.node_id, entry.host, entry.port) == (1, "127.0.0.1", broker.port)


@pytest.mark.parametrize("version", range(6))
def test_init_producer_id_new_id_has_epoch_0_and_a_second_init_bumps_it(conn, version):
    tid = new_tid()
    assert find_coordinator(conn, max(version, 1), tid).error_code is NONE
    first = init_producer_id(conn, version, tid)
    assert first.error_code is NONE
    assert first.producer_id >= 0 and first.producer_epoch == 0
    second = init_producer_id(conn, version, tid)
    assert second.error_code is NONE
    assert (second.producer_id, second.producer_epoch) == (first.producer_id, 1)
    other = init_producer_id(conn, version, new_tid())
    assert other.error_code is NONE and other.producer_id != first.producer_id


@pytest.mark.parametrize("version", range(3, 6))
def test_init_producer_id_with_current_id_and_epoch_bumps_and_a_stale_epoch_is_fenced(conn, version):
    tid = new_tid()
    first = init_producer_id(conn, version, tid)
    pid = first.producer_id
    # KIP-360: the producer names its current id and epoch; the coordinator bumps it.
    bumped = init_producer_id(conn, version, tid, producer_id=pid, producer_epoch=0)
    assert bumped.error_code is NONE
    assert (bumped.producer_id, bumped.producer_epoch) == (pid, 1)
    again = init_producer_id(conn, version, tid, producer_id=pid, producer_epoch=1)
    assert (again.error_code, again.producer_id, again.producer_epoch) == (NONE, pid, 2)
    # Epoch 0 is neither the current epoch (2) nor the last one (1): an old instance, fenced.
    stale = init_producer_id(conn, version, tid, producer_id=pid, producer_epoch=0)
    assert stale.error_code is fenced(22, version)
    assert init_producer_id(conn, version, tid).producer_epoch == 3  # the fenced call changed nothing


@pytest.mark.parametrize("version", range(6))
def test_init_producer_id_timeout_above_the_maximum_or_not_positive_is_invalid(conn, version):
    tid = new_tid()
    for timeout_ms in (MAX_TXN_TIMEOUT_MS + 1, 0):
        response = init_producer_id(conn, version, tid, timeout_ms=timeout_ms)
        assert response.error_code is ErrorCode.invalid_transaction_timeout, timeout_ms
    at_max = init_producer_id(conn, version, tid, timeout_ms=MAX_TXN_TIMEOUT_MS)
    assert (at_max.error_code, at_max.producer_epoch) == (NONE, 0)


@pytest.mark.parametrize("version", range(6))
def test_init_producer_id_with_empty_transactional_id_is_invalid_request(conn, version):
    assert init_producer_id(conn, version, "").error_code is ErrorCode.invalid_request


@pytest.mark.parametrize("version", range(6))
def test_init_producer_id_without_transactional_id_allocates_an_idempotent_producer(conn, version):
    a, b = init_producer_id(conn, version, None), init_producer_id(conn, version, None)
    assert a.error_code is NONE and b.error_code is NONE
    assert a.producer_epoch == 0 and b.producer_epoch == 0 and a.producer_id != b.producer_id


# --- AddPartitionsToTxn --------------------------------------------------------------------------

@pytest.mark.parametrize("version", range(6))
def test_add_partitions_to_txn_adds_and_refuses_unknown_topics_as_a_whole(conn, topic, version):
    tid = new_tid()
    init = init_producer_id(conn, 4, tid)
    pid, epoch = init.producer_id, init.producer_epoch
    missing = f"missing-{uuid.uuid4().hex[:6]}"
    refused = add_partitions(conn, version, tid, pid, epoch, {topic: [0], missing: [0]})
    assert refused == {(topic, 0): ErrorCode.operation_not_attempted,
                       (missing, 0): ErrorCode.unknown_topic_or_partition}
    beyond = add_partitions(conn, version, tid, pid, epoch, {topic: [0, PARTITIONS]})
    assert beyond == {(topic, 0): ErrorCode.operation_not_attempted,
                      (topic, PARTITIONS): ErrorCode.unknown_topic_or_partition}
    assert add_partitions(conn, version, tid, pid, epoch, {topic: [0, 1]}) == {(topic, 0): NONE, (topic, 1): NONE}
    assert add_partitions(conn, version, tid, pid, epoch, {topic: [1]}) == {(topic, 1): NONE}  # again: fine
    wrong_id = add_partitions(conn, version, tid, pid + 1_000_000, epoch, {topic: [0]})
    assert wrong_id == {(topic, 0): ErrorCode.invalid_producer_id_mapping}
    unknown_tid = add_partitions(conn, version, new_tid(), pid, epoch, {topic: [0]})
    assert unknown_tid == {(topic, 0): ErrorCode.invalid_producer_id_mapping}
    bumped = reinit_over_open_transaction(conn, tid)
    assert bumped.producer_epoch == epoch + 2
    assert add_partitions(conn, version, tid, pid, epoch, {topic: [0]}) == {(topic, 0): fenced(24, version)}


@pytest.mark.parametrize("version", (4, 5))
def test_add_partitions_to_txn_batched_verify_only(conn, topic, version):
    tid, other = new_tid(), new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,))
    other_init = init_producer_id(conn, 4, other)
    m = request_module(24, version)

    def txn(transactional_id, producer_id, producer_epoch, verify_only, partitions):
        return m.AddPartitionsToTxnTransaction(
            transactional_id=transactional_id, producer_id=producer_id, producer_epoch=producer_epoch,
            verify_only=verify_only, topics=(m.AddPartitionsToTxnTopic(name=topic, partitions=partitions),))

    response = conn.request(m.AddPartitionsToTxnRequest(transactions=(
        txn(tid, pid, epoch, True, (0, 1)),
        txn(other, other_init.producer_id, other_init.producer_epoch, False, (1,)),
    )))
    assert response.error_code is NONE
    by_tid = {r.transactional_id: {p.partition_index: p.partition_error_code
                                   for t in r.topic_results for p in t.results_by_partition}
              for r in response.results_by_transaction}
    assert by_tid == {tid: {0: NONE, 1: ErrorCode.transaction_abortable}, other: {1: NONE}}
    # verify_only wrote nothing: partition 1 is still not in tid's transaction.
    assert add_partitions(conn, version, tid, pid, epoch, {topic: [1]}, verify_only=True) == {
        (topic, 1): ErrorCode.transaction_abortable}
    assert add_partitions(conn, version, other, other_init.producer_id, other_init.producer_epoch,
                          {topic: [1]}, verify_only=True) == {(topic, 1): NONE}


# --- Produce with transactions -------------------------------------------------------------------

def test_produce_transactional_batch_to_an_added_partition_is_accepted(conn, topic):
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,))
    first = produce(conn, topic, 0, txn_batch([b"a", b"b"], pid, epoch, 0), transactional_id=tid)
    assert (first.error_code, first.base_offset) == (NONE, 0)
    second = produce(conn, topic, 0, txn_batch([b"c"], pid, epoch, 2), transactional_id=tid)
    assert (second.error_code, second.base_offset) == (NONE, 2)


def test_produce_transactional_batch_to_a_partition_not_added_is_invalid_txn_state(conn, topic):
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,))
    refused = produce(conn, topic, 1, txn_batch([b"x"], pid, epoch, 0), transactional_id=tid)
    assert refused.error_code is ErrorCode.invalid_txn_state
    assert fetch(conn, topic, 1, 0, 0).high_watermark == 0


def test_produce_transactional_batch_without_a_transactional_id_is_refused(conn, topic):
    """Kafka (KafkaApis.handleProduceRequest): transactional records in a request without a
    transactional id fail its authorization check, TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every
    partition of the request."""
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,))
    refused = produce(conn, topic, 0, txn_batch([b"x"], pid, epoch, 0), transactional_id=None)
    assert refused.error_code is ErrorCode.transactional_id_authorization_failed
    assert fetch(conn, topic, 0, 0, 0).high_watermark == 0


def test_produce_control_batch_from_a_client_is_invalid_record(conn, topic):
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,))
    marker = records.build_end_txn_marker(producer_id=pid, producer_epoch=epoch, commit=True,
                                          coordinator_epoch=0, timestamp_ms=int(time.time() * 1000))
    refused = produce(conn, topic, 0, marker, transactional_id=tid)
    assert refused.error_code is ErrorCode.invalid_record
    # A control batch is transactional too: without a transactional id Kafka's authorization
    # check refuses it first.
    refused = produce(conn, topic, 0, marker, transactional_id=None)
    assert refused.error_code is ErrorCode.transactional_id_authorization_failed
    assert fetch(conn, topic, 0, 0, 0).high_watermark == 0


def test_produce_with_a_fenced_epoch_is_refused(conn, topic):
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,))
    assert produce(conn, topic, 0, txn_batch([b"a"], pid, epoch, 0), transactional_id=tid).error_code is NONE
    bumped = reinit_over_open_transaction(conn, tid)
    assert bumped.producer_epoch == epoch + 2
    stale = produce(conn, topic, 0, txn_batch([b"zombie"], pid, epoch, 1), transactional_id=tid)
    assert stale.error_code is ErrorCode.invalid_producer_epoch
    assert values_of(fetch(conn, topic, 0, 0, 0).records) == [b"a"]


# --- EndTxn, markers, read_committed -------------------------------------------------------------

FETCH_FOR_END = {0: 4, 1: 5, 2: 7, 3: 11, 4: 12, 5: 12}  # EndTxn version -> a Fetch version of its era


@pytest.mark.parametrize("commit", (True, False), ids=("commit", "abort"))
@pytest.mark.parametrize("version", range(6))
def test_end_txn_writes_markers_and_read_committed_honours_them(conn, topic, version, commit):
    fetch_version = FETCH_FOR_END[version]
    add_version = 5 if version >= 5 else min(version, 3)  # a transaction-version-2 client at v5
    plain = produce(conn, topic, 0, records.build_batch([(None, b"before", [], int(time.time() * 1000))]),
                    transactional_id=None)
    assert (plain.error_code, plain.base_offset) == (NONE, 0)
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0, 1), add_version=add_version)
    for p in (0, 1):
        assert produce(conn, topic, p, txn_batch([b"t1", b"t2"], pid, epoch, 0),
                       transactional_id=tid).error_code is NONE
    # Open: read_committed stops at the first offset of the open transaction.
    open_0 = fetch(conn, topic, 0, 0, 1, fetch_version)
    assert (open_0.high_watermark, open_0.last_stable_offset) == (3, 1)
    assert values_of(open_0.records) == [b"before"]
    assert list(open_0.aborted_transactions or ()) == []
    open_1 = fetch(conn, topic, 1, 0, 1, fetch_version)
    assert (open_1.high_watermark, open_1.last_stable_offset) == (2, 0)
    assert values_of(open_1.records) == []
    assert values_of(fetch(conn, topic, 0, 0, 0, fetch_version).records) == [b"before", b"t1", b"t2"]
    assert [latest_offset(conn, topic, p, 1) for p in (0, 1)] == [1, 0]
    assert [latest_offset(conn, topic, p, 0) for p in (0, 1)] == [3, 2]

    ended = end_txn(conn, version, tid, pid, epoch, commit)
    assert ended.error_code is NONE
    if version >= 5:  # transaction version 2: every end bumps the epoch
        assert (ended.producer_id, ended.producer_epoch) == (pid, epoch + 1)
    # The markers land at offsets 3 and 2; then the LSO is the high watermark.
    wait_until(lambda: [latest_offset(conn, topic, p, 1) for p in (0, 1)] == [4, 3], SETTLE_TIMEOUT_S,
               "the markers and the last stable offset")
    assert [latest_offset(conn, topic, p, 0) for p in (0, 1)] == [4, 3]

    uncommitted = fetch(conn, topic, 0, 0, 0, fetch_version)
    assert values_of(uncommitted.records) == [b"before", b"t1", b"t2"]
    assert markers_of(uncommitted.records) == [(3, commit)]
    control = [h for h, _ in batches(uncommitted.records) if h.is_control][0]
    assert (control.producer_id, control.producer_epoch) == (pid, epoch + 1 if version >= 5 else epoch)
    assert control.is_transactional

    committed = fetch(conn, topic, 0, 0, 1, fetch_version)
    assert (committed.high_watermark, committed.last_stable_offset) == (4, 4)
    aborted = [(a.producer_id, a.first_offset) for a in committed.aborted_transactions or ()]
    assert aborted == ([] if commit else [(pid, 1)])
    assert markers_of(committed.records) == [(3, commit)]  # the client drops aborted data itself
    later = fetch(conn, topic, 1, 0, 1, fetch_version)
    aborted_1 = [(a.producer_id, a.first_offset) for a in later.aborted_transactions or ()]
    assert aborted_1 == ([] if commit else [(pid, 0)])
    # A read_committed fetch past the aborted range lists no aborted transaction.
    assert list(fetch(conn, topic, 0, 4, 1, fetch_version).aborted_transactions or ()) == []

    # The producer goes on with a second transaction (with the epoch EndTxn answered, v5).
    epoch = ended.producer_epoch if version >= 5 else epoch
    errors = add_partitions_settled(conn, add_version, tid, pid, epoch, {topic: [0]})
    assert errors == {(topic, 0): NONE}
    seq = 0 if version >= 5 else 2
    assert produce(conn, topic, 0, txn_batch([b"t3"], pid, epoch, seq), transactional_id=tid).error_code is NONE
    assert latest_offset(conn, topic, 0, 1) == 4
    assert end_txn(conn, version, tid, pid, epoch, True).error_code is NONE
    wait_until(lambda: latest_offset(conn, topic, 0, 1) == 6, SETTLE_TIMEOUT_S, "the second commit")


@pytest.mark.parametrize("add_version", (3, 4))
def test_end_txn_v5_bumps_the_epoch_whatever_version_added_the_partitions(conn, topic, add_version):
    """Kafka takes the transaction version of an EndTxn from its request version alone
    (TransactionVersion.transactionVersionForEndTxn: v5+ is TV_2) and TransactionMetadata.
    prepareAbortOrCommit bumps the epoch for TV_2; the markers carry the bumped epoch."""
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,), add_version=add_version)
    assert produce(conn, topic, 0, txn_batch([b"a"], pid, epoch, 0), transactional_id=tid).error_code is NONE
    ended = end_txn(conn, 5, tid, pid, epoch, True)
    assert (ended.error_code, ended.producer_id, ended.producer_epoch) == (NONE, pid, epoch + 1)
    wait_until(lambda: latest_offset(conn, topic, 0, 1) == 2, SETTLE_TIMEOUT_S, "the commit marker")
    control = [h for h, _ in batches(fetch(conn, topic, 0, 0, 0).records) if h.is_control]
    assert [(h.producer_id, h.producer_epoch) for h in control] == [(pid, epoch + 1)]


@pytest.mark.parametrize("version", range(6))
def test_end_txn_errors(conn, topic, version):
    tid = new_tid()
    init_producer_id(conn, 4, tid)
    init = init_producer_id(conn, 4, tid)
    pid, epoch = init.producer_id, init.producer_epoch
    assert epoch == 1
    # Nothing open: Kafka answers INVALID_TXN_STATE for a commit from the Empty state.
    assert end_txn(conn, version, tid, pid, epoch, True).error_code is ErrorCode.invalid_txn_state
    assert end_txn(conn, version, new_tid(), pid, epoch, True).error_code is ErrorCode.invalid_producer_id_mapping
    assert add_partitions(conn, 3, tid, pid, epoch, {topic: [0]}) == {(topic, 0): NONE}
    wrong = end_txn(conn, version, tid, pid + 1_000_000, epoch, True)
    assert wrong.error_code is ErrorCode.invalid_producer_id_mapping
    stale = end_txn(conn, version, tid, pid, epoch - 1, True)
    assert stale.error_code is fenced(26, version)
    assert end_txn(conn, version, tid, pid, epoch, False).error_code is NONE


# --- AddOffsetsToTxn, TxnOffsetCommit, OffsetFetch -----------------------------------------------

def offset_fetch(conn, group: str, topic: str, partition: int, *, require_stable: bool, version: int = 8):
    """(committed offset, error) of one partition of a group."""
    m = request_module(9, version)
    if version >= 8:
        response = conn.request(m.OffsetFetchRequest(groups=(m.OffsetFetchRequestGroup(
            group_id=group, topics=(m.OffsetFetchRequestTopics(name=topic, partition_indexes=(partition,)),)),),
            require_stable=require_stable))
        assert response.groups[0].error_code is NONE
        result = response.groups[0].topics[0].partitions[0]
    else:
        response = conn.request(make(m.OffsetFetchRequest, group_id=group, require_stable=require_stable,
                                     topics=(m.OffsetFetchRequestTopic(name=topic, partition_indexes=(partition,)),)))
        assert response.error_code is NONE
        result = response.topics[0].partitions[0]
    return result.committed_offset, result.error_code


def txn_offset_commit(conn, version: int, tid: str, group: str, pid: int, epoch: int, topic: str,
                      offsets: dict[int, int]) -> dict[int, ErrorCode]:
    m = request_module(28, version)
    response = conn.request(make(
        m.TxnOffsetCommitRequest, transactional_id=tid, group_id=group, producer_id=pid, producer_epoch=epoch,
        generation_id=-1, member_id="", group_instance_id=None,
        topics=(m.TxnOffsetCommitRequestTopic(name=topic, partitions=tuple(
            make(m.TxnOffsetCommitRequestPartition, partition_index=p, committed_offset=o,
                 committed_leader_epoch=-1, committed_metadata="txn") for p, o in offsets.items())),),
    ))
    return {p.partition_index: p.error_code for t in response.topics for p in t.partitions}


def add_offsets(conn, version: int, tid: str, pid: int, epoch: int, group: str):
    return conn.request(req(25, version, "AddOffsetsToTxnRequest", transactional_id=tid, producer_id=pid,
                            producer_epoch=epoch, group_id=group))


@pytest.mark.parametrize("commit", (True, False), ids=("commit", "abort"))
@pytest.mark.parametrize("version", range(6))
def test_txn_offset_commit_is_visible_only_after_commit(conn, topic, version, commit):
    add_version, tid, group = min(version, 4), new_tid(), f"g-{uuid.uuid4().hex[:8]}"
    wait_until(lambda: find_coordinator(conn, 3, group, key_type=0).error_code is NONE, SETTLE_TIMEOUT_S,
               "FindCoordinator for the group")
    init = init_settled(conn, 4, tid)
    pid, epoch = init.producer_id, init.producer_epoch
    assert add_offsets(conn, add_version, tid, pid, epoch, group).error_code is NONE
    assert txn_offset_commit(conn, version, tid, group, pid, epoch, topic, {0: 7, 1: 9}) == {0: NONE, 1: NONE}
    # Pending: not visible; require_stable asks the client to retry.
    assert offset_fetch(conn, group, topic, 0, require_stable=False) == (-1, NONE)
    assert offset_fetch(conn, group, topic, 0, require_stable=True) == (-1, ErrorCode.unstable_offset_commit)
    assert offset_fetch(conn, group, topic, 1, require_stable=True, version=7) == (
        -1, ErrorCode.unstable_offset_commit)
    assert end_txn(conn, min(version, 5), tid, pid, epoch, commit).error_code is NONE
    expected = (7 if commit else -1, NONE)
    wait_until(lambda: offset_fetch(conn, group, topic, 0, require_stable=True) == expected, SETTLE_TIMEOUT_S,
               "the offsets after the end of the transaction")
    assert offset_fetch(conn, group, topic, 1, require_stable=True, version=7) == (9 if commit else -1, NONE)


@pytest.mark.parametrize("version", range(5))
def test_add_offsets_to_txn_errors(conn, version):
    tid, group = new_tid(), f"g-{uuid.uuid4().hex[:8]}"
    init = init_producer_id(conn, 4, tid)
    pid, epoch = init.producer_id, init.producer_epoch
    assert add_offsets(conn, version, new_tid(), pid, epoch, group).error_code is ErrorCode.invalid_producer_id_mapping
    assert add_offsets(conn, version, tid, pid + 1_000_000, epoch, group).error_code is (
        ErrorCode.invalid_producer_id_mapping)
    assert init_producer_id(conn, 4, tid).producer_epoch == epoch + 1
    assert add_offsets(conn, version, tid, pid, epoch, group).error_code is fenced(25, version)
    assert add_offsets(conn, version, tid, pid, epoch + 1, group).error_code is NONE


@pytest.mark.parametrize("version", range(6))
def test_txn_offset_commit_for_an_unknown_topic_is_unknown_topic_or_partition(conn, topic, version):
    tid, group = new_tid(), f"g-{uuid.uuid4().hex[:8]}"
    wait_until(lambda: find_coordinator(conn, 3, group, key_type=0).error_code is NONE, SETTLE_TIMEOUT_S,
               "FindCoordinator for the group")
    init = init_settled(conn, 4, tid)
    pid, epoch = init.producer_id, init.producer_epoch
    assert add_offsets(conn, min(version, 4), tid, pid, epoch, group).error_code is NONE
    missing = f"missing-{uuid.uuid4().hex[:6]}"
    assert txn_offset_commit(conn, version, tid, group, pid, epoch, missing, {0: 1}) == {
        0: ErrorCode.unknown_topic_or_partition}
    assert txn_offset_commit(conn, version, tid, group, pid, epoch, topic, {0: 3}) == {0: NONE}
    assert end_txn(conn, min(version, 4), tid, pid, epoch, True).error_code is NONE
    wait_until(lambda: offset_fetch(conn, group, topic, 0, require_stable=True) == (3, NONE), SETTLE_TIMEOUT_S,
               "the committed offset")
