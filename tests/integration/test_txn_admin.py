"""The transaction admin APIs over raw sockets against a broker process - WriteTxnMarkers (27 v1),
DescribeProducers (61 v0), DescribeTransactions (65 v0), ListTransactions (66 v0-2) - and
`odradek transactions` end to end. Open transactions come from confluent-kafka's transactional
producer (init_transactions, begin_transaction, produce, flush, and no commit)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Producer

from odradek import cli
from odradek.client.transactions import decode_describe_transactions
from odradek.protocol.apis import make
from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection, request_module

OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "2",
}
TIMESTAMP_MS = 1_700_000_000_000
TXN_TIMEOUT_MS = 120_000  # longer than any test: the coordinator must not abort on its own
NONE = ErrorCode.none


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("txn-admin")), overrides=OVERRIDES) as process:
        yield process


@pytest.fixture
def conn(broker):
    with RawConnection(broker.bootstrap) as connection:
        yield connection


@pytest.fixture
def topic(conn):
    name = f"txa-{uuid.uuid4().hex[:8]}"
    m = request_module(19, 7)
    created = conn.request(
        make(
            m.CreateTopicsRequest,
            topics=(
                make(m.CreatableTopic, name=name, num_partitions=2, replication_factor=1,
                     assignments=(), configs=()),
            ),
            timeout=timedelta(seconds=10),
            validate_only=False,
        )
    )
    assert created.topics[0].error_code is NONE
    return name


def req(api_key: int, version: int, name: str, **fields):
    return make(getattr(request_module(api_key, version), name), **fields)


def describe_producers(conn, topic, partitions=(0,)):
    m = request_module(61, 0)
    response = conn.request(
        m.DescribeProducersRequest(topics=(m.TopicRequest(name=topic, partition_indexes=tuple(partitions)),))
    )
    assert len(response.topics) == 1 and response.topics[0].name == topic
    return response.topics[0].partitions


def write_marker(conn, topic, partitions, producer_id, producer_epoch, coordinator_epoch, commit=False):
    m = request_module(27, 1)
    response = conn.request(
        m.WriteTxnMarkersRequest(
            markers=(
                m.WritableTxnMarker(
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    transaction_result=commit,
                    topics=(m.WritableTxnMarkerTopic(name=topic, partition_indexes=tuple(partitions)),),
                    coordinator_epoch=coordinator_epoch,
                ),
            )
        )
    )
    (marker,) = response.markers
    assert marker.producer_id == producer_id
    return {(t.name, p.partition_index): p.error_code for t in marker.topics for p in t.partitions}


def list_offset(conn, topic, partition=0, *, read_committed=False):
    m = request_module(2, 7)
    response = conn.request(
        m.ListOffsetsRequest(
            replica_id=-1,
            isolation_level=1 if read_committed else 0,
            topics=(
                m.ListOffsetsTopic(
                    name=topic,
                    partitions=(m.ListOffsetsPartition(partition_index=partition,
                                                       current_leader_epoch=-1, timestamp=-1),),
                ),
            ),
        )
    )
    p = response.topics[0].partitions[0]
    assert p.error_code is NONE
    return p.offset


def describe_transactions(conn, *ids):
    return conn.request(req(65, 0, "DescribeTransactionsRequest", transactional_ids=ids)).transaction_states


def describe_transactions_by_hand(conn, *ids):
    """DescribeTransactions read with the client's own decoder: kio's reader refuses the start
    time -1 of a transactional id without an open transaction."""
    conn.send(req(65, 0, "DescribeTransactionsRequest", transactional_ids=ids))
    return decode_describe_transactions(conn.receive_frame())


def list_transactions(conn, version=2, **filters):
    fields = {"state_filters": (), "producer_id_filters": (), "duration_filter": -1,
              "transactional_id_pattern": None, **filters}
    return conn.request(req(66, version, "ListTransactionsRequest", **fields))


def idempotent_producer(broker):
    return Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 0})


def open_transaction(broker, topic, partition=0, values=(b"a", b"b")):
    """A transactional producer with an open transaction holding `values` on the partition."""
    transactional_id = f"tx-{uuid.uuid4().hex[:8]}"
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": TXN_TIMEOUT_MS,
        "linger.ms": 0,
    })
    producer.init_transactions(10)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value, partition=partition, timestamp=TIMESTAMP_MS)
    assert producer.flush(10) == 0
    return transactional_id, producer


def transactions_cli(broker, capsys, *argv):
    capsys.readouterr()
    code = cli.main(["transactions", *argv, "--bootstrap-server", broker.bootstrap])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tsv(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.splitlines() if line.strip()]


# -- ApiVersions -------------------------------------------------------------------------------


def test_api_versions_advertise_the_transaction_admin_apis(conn):
    response = conn.request(req(18, 3, "ApiVersionsRequest", client_software_name="t",
                                client_software_version="1"))
    versions = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in response.api_keys}
    assert versions[27] == (1, 1)
    assert versions[61] == (0, 0)
    assert versions[65] == (0, 0)
    assert versions[66] == (0, 2)


# -- DescribeProducers -------------------------------------------------------------------------


def test_describe_producers_shows_an_idempotent_producer_and_its_last_sequence(conn, broker, topic):
    producer = idempotent_producer(broker)
    for i in range(3):
        producer.produce(topic, value=b"v", partition=1, timestamp=TIMESTAMP_MS + i)
        assert producer.flush(10) == 0  # one batch each
    (p0, p1) = describe_producers(conn, topic, (0, 1))
    assert (p0.partition_index, p0.error_code, p0.active_producers) == (0, NONE, ())
    assert (p1.partition_index, p1.error_code) == (1, NONE)
    (state,) = p1.active_producers
    assert state.producer_id >= 0
    assert state.producer_epoch == 0
    assert state.last_sequence == 2
    assert state.last_timestamp == TIMESTAMP_MS + 2
    assert state.coordinator_epoch == -1
    assert state.current_txn_start_offset == -1


def test_describe_producers_of_unknown_topic_or_partition(conn, topic):
    (missing,) = describe_producers(conn, f"nope-{uuid.uuid4().hex[:6]}")
    assert missing.error_code is ErrorCode.unknown_topic_or_partition
    (beyond,) = describe_producers(conn, topic, (7,))
    assert (beyond.partition_index, beyond.error_code) == (7, ErrorCode.unknown_topic_or_partition)


# -- WriteTxnMarkers ---------------------------------------------------------------------------


def test_write_txn_markers_unknown_topic_and_partition(conn, topic):
    unknown = f"nope-{uuid.uuid4().hex[:6]}"
    assert write_marker(conn, unknown, (0, 1), 4242, 0, 0) == {
        (unknown, 0): ErrorCode.unknown_topic_or_partition,
        (unknown, 1): ErrorCode.unknown_topic_or_partition,
    }
    errors = write_marker(conn, topic, (0, 9), 4242, 0, 0)
    assert errors == {(topic, 0): NONE, (topic, 9): ErrorCode.unknown_topic_or_partition}


def test_write_txn_markers_appends_a_marker_and_fences_older_epochs(conn, broker, topic):
    producer = idempotent_producer(broker)
    producer.produce(topic, value=b"x", partition=0)
    assert producer.flush(10) == 0
    (state,) = describe_producers(conn, topic)[0].active_producers
    pid = state.producer_id
    assert list_offset(conn, topic) == 1
    assert write_marker(conn, topic, (0,), pid, 0, coordinator_epoch=5) == {(topic, 0): NONE}
    assert list_offset(conn, topic) == 2  # the control batch takes an offset
    (state,) = describe_producers(conn, topic)[0].active_producers
    assert (state.producer_id, state.coordinator_epoch) == (pid, 5)
    fenced = write_marker(conn, topic, (0,), pid, 0, coordinator_epoch=4)
    assert fenced == {(topic, 0): ErrorCode.transaction_coordinator_fenced}
    assert write_marker(conn, topic, (0,), pid, 1, coordinator_epoch=5) == {(topic, 0): NONE}
    stale = write_marker(conn, topic, (0,), pid, 0, coordinator_epoch=5)
    assert stale == {(topic, 0): ErrorCode.invalid_producer_epoch}
    assert list_offset(conn, topic) == 3


def test_write_txn_markers_answers_every_marker_of_a_request(conn, topic):
    m = request_module(27, 1)
    markers = tuple(
        m.WritableTxnMarker(producer_id=pid, producer_epoch=0, transaction_result=True,
                            topics=(m.WritableTxnMarkerTopic(name=topic, partition_indexes=(0, 1)),),
                            coordinator_epoch=0)
        for pid in (9001, 9002)
    )
    response = conn.request(m.WriteTxnMarkersRequest(markers=markers))
    assert [r.producer_id for r in response.markers] == [9001, 9002]
    for r in response.markers:
        assert [(p.partition_index, p.error_code) for t in r.topics for p in t.partitions] == [
            (0, NONE), (1, NONE)]
    assert list_offset(conn, topic, 0) == 2 and list_offset(conn, topic, 1) == 2


# -- ListTransactions without a coordinator's state -------------------------------------------


def test_list_transactions_v2_invalid_pattern_is_invalid_regular_expression(conn):
    response = list_transactions(conn, transactional_id_pattern="tx-(")
    assert response.error_code is ErrorCode.invalid_regular_expression
    assert response.transaction_states == ()


# -- open transactions (the transaction coordinator, Produce and EndTxn wired in) --------------


def test_describe_and_list_an_open_transaction(conn, broker, topic):
    transactional_id, producer = open_transaction(broker, topic, partition=1)
    (d,) = describe_transactions(conn, transactional_id)
    assert d.error_code is NONE
    assert d.transactional_id == transactional_id
    assert d.transaction_state == "Ongoing"
    assert d.transaction_timeout == timedelta(milliseconds=TXN_TIMEOUT_MS)
    assert abs(d.transaction_start_time.timestamp() * 1000 - time.time() * 1000) < 60_000
    assert d.producer_id >= 0 and d.producer_epoch >= 0
    assert [(t.topic, tuple(t.partitions)) for t in d.topics] == [(topic, (1,))]
    (by_hand,) = describe_transactions_by_hand(conn, transactional_id)
    assert by_hand.transaction_start_time_ms == round(d.transaction_start_time.timestamp() * 1000)
    assert (by_hand.producer_id, by_hand.transaction_timeout_ms, by_hand.partitions) == (
        d.producer_id, TXN_TIMEOUT_MS, ((topic, 1),))

    listed = {t.transactional_id: t for t in list_transactions(conn).transaction_states}
    assert listed[transactional_id].transaction_state == "Ongoing"
    assert listed[transactional_id].producer_id == d.producer_id

    by_state = list_transactions(conn, state_filters=("Ongoing", "Bogus"))
    assert by_state.unknown_state_filters == ("Bogus",)
    assert transactional_id in {t.transactional_id for t in by_state.transaction_states}
    assert transactional_id not in {
        t.transactional_id for t in list_transactions(conn, state_filters=("Empty",)).transaction_states}
    by_pid = list_transactions(conn, version=0, producer_id_filters=(d.producer_id,))
    assert [t.transactional_id for t in by_pid.transaction_states] == [transactional_id]
    assert transactional_id not in {
        t.transactional_id for t in list_transactions(conn, version=1, duration_filter=3_600_000).transaction_states}
    pattern = list_transactions(conn, transactional_id_pattern=transactional_id[:5] + ".*")
    assert [t.transactional_id for t in pattern.transaction_states] == [transactional_id]
    partial = list_transactions(conn, transactional_id_pattern=transactional_id[:5])  # must match whole
    assert partial.transaction_states == ()

    (p1,) = describe_producers(conn, topic, (1,))
    (state,) = [s for s in p1.active_producers if s.producer_id == d.producer_id]
    assert state.current_txn_start_offset == 0
    assert state.producer_epoch == d.producer_epoch
    producer.abort_transaction(10)


def test_describe_unknown_transactional_id_is_transactional_id_not_found(conn):
    (d,) = describe_transactions_by_hand(conn, f"never-{uuid.uuid4().hex[:8]}")
    assert d.error_code is ErrorCode.transactional_id_not_found
    assert (d.producer_id, d.producer_epoch, d.transaction_start_time_ms) == (-1, -1, -1)


def test_describe_a_committed_transaction_is_complete_commit_with_no_partitions(conn, broker, topic):
    transactional_id, producer = open_transaction(broker, topic)
    producer.commit_transaction(10)
    (d,) = describe_transactions_by_hand(conn, transactional_id)
    assert d.error_code is NONE
    assert d.transaction_state == "CompleteCommit"
    assert d.partitions == ()


def test_write_txn_markers_abort_releases_the_last_stable_offset(conn, broker, topic):
    _, producer = open_transaction(broker, topic, partition=0, values=(b"a", b"b", b"c"))
    (state,) = [s for s in describe_producers(conn, topic)[0].active_producers
                if s.current_txn_start_offset >= 0]
    assert state.current_txn_start_offset == 0
    assert list_offset(conn, topic, read_committed=True) == 0  # the open transaction holds the LSO
    errors = write_marker(conn, topic, (0,), state.producer_id, state.producer_epoch,
                          max(state.coordinator_epoch, 0))
    assert errors == {(topic, 0): NONE}
    assert list_offset(conn, topic, read_committed=True) == 4
    (after,) = [s for s in describe_producers(conn, topic)[0].active_producers
                if s.producer_id == state.producer_id]
    assert after.current_txn_start_offset == -1
    del producer


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_list_describe_describe_producers_and_abort(broker, capsys, topic):
    with RawConnection(broker.bootstrap) as conn:
        producer = idempotent_producer(broker)
        producer.produce(topic, value=b"plain", partition=0)
        assert producer.flush(10) == 0
        transactional_id, txn_producer = open_transaction(broker, topic, partition=0)
        (d,) = describe_transactions(conn, transactional_id)

        code, out, err = transactions_cli(broker, capsys, "list")
        assert code == 0, err
        table = tsv(out)
        assert table[0] == ["TransactionalId", "Coordinator", "ProducerId", "TransactionState"]
        assert [transactional_id, "1", str(d.producer_id), "Ongoing"] in table[1:]

        code, out, err = transactions_cli(broker, capsys, "list", "--state", "Empty")
        assert code == 0, err
        assert transactional_id not in out

        code, out, err = transactions_cli(broker, capsys, "describe", "--transactional-id", transactional_id)
        assert code == 0, err
        header, row = tsv(out)
        described = dict(zip(header, row))
        assert described["TransactionalId"] == transactional_id
        assert described["TransactionState"] == "Ongoing"
        assert described["ProducerId"] == str(d.producer_id)
        assert described["TransactionTimeoutMs"] == str(TXN_TIMEOUT_MS)
        assert described["TopicPartitions"] == f"{topic}-0"

        code, out, err = transactions_cli(broker, capsys, "describe-producers", "--topic", topic,
                                          "--partition", "0")
        assert code == 0, err
        rows = {r[0]: r for r in tsv(out)[1:]}
        assert rows[str(d.producer_id)][5] == "1"  # its transaction starts after the plain record

        code, out, err = transactions_cli(broker, capsys, "abort", "--topic", topic, "--partition", "0",
                                          "--start-offset", "0")
        assert code == 1
        assert "no open transaction starts at offset 0" in err and "1" in err
        assert list_offset(conn, topic, read_committed=True) == 1

        code, out, err = transactions_cli(broker, capsys, "abort", "--topic", topic, "--partition", "0",
                                          "--start-offset", "1")
        assert code == 0, err
        assert f"producer {d.producer_id}" in out
        assert list_offset(conn, topic, read_committed=True) == list_offset(conn, topic)
        del txn_producer


def test_cli_describe_unknown_transactional_id_fails_in_one_line(broker, capsys):
    code, _, err = transactions_cli(broker, capsys, "describe", "--transactional-id", "never-seen")
    assert code == 1
    assert "TRANSACTIONAL_ID_NOT_FOUND" in err and len(err.strip().splitlines()) == 1


def test_cli_abort_on_an_unknown_topic_fails_in_one_line(broker, capsys):
    code, _, err = transactions_cli(broker, capsys, "abort", "--topic", "missing-topic", "--partition",
                                      "0", "--start-offset", "0")
    assert code == 1
    assert err.startswith("odradek: ") and len(err.strip().splitlines()) == 1


def test_cli_find_hanging_does_not_report_a_live_transaction(broker, capsys, topic):
    _, producer = open_transaction(broker, topic, partition=1)
    # Its producer's last write is stamped TIMESTAMP_MS (2023): old enough to be a candidate,
    # but its coordinator holds it Ongoing on this partition, so it is not hanging.
    code, out, err = transactions_cli(broker, capsys, "find-hanging", "--topic", topic,
                                      "--max-transaction-timeout-ms", "1000")
    assert code == 0, err
    table = tsv(out)
    assert table[0][:3] == ["Topic", "Partition", "ProducerId"]
    assert table[1:] == []
    code, out, err = transactions_cli(broker, capsys, "find-hanging", "--broker-id", "1")
    assert code == 0, err
    producer.abort_transaction(10)
