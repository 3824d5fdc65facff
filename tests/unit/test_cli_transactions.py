"""The transaction admin without a socket: the DescribeTransactions and ListTransactions handlers
over a TransactionCoordinator driven by TxnHarness (responses encoded by kio, as the broker
does), the client's hand-written DescribeTransactions decoder against kio's encoder, the abort
lookup of `TransactionAdmin`, and `odradek transactions` argument handling and tables."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from odradek import cli
from odradek.broker.context import ClientInfo, RequestContext
from odradek.broker.handlers import describe_transactions, list_transactions
from odradek.cli_transactions import describe_rows
from odradek.client.transactions import (
    NoOpenTransactionError,
    OpenTransaction,
    ProducerState,
    TransactionAdmin,
    TransactionDescription,
    decode_describe_transactions,
    is_hanging,
)
from odradek.coordinator.txn_harness import TxnHarness
from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode
from odradek.testing.raw import request_module

MINUTE_MS = 60_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def call(handler, api_key, version, request, coordinator):
    """Run a handler as the connection does, and encode its response with kio."""
    broker = SimpleNamespace(txns=SimpleNamespace(coordinator=coordinator))
    ctx = RequestContext(api_key, version, 7, "test", ClientInfo("c", "PLAINTEXT", "h", 1), broker)
    response = asyncio.run(handler.handle(request, ctx))
    _, writer, _ = apis.response_codec(api_key, version)
    buffer = io.BytesIO()
    writer(buffer, response)
    return response, buffer.getvalue()


def describe(coordinator, *ids):
    request = request_module(65, 0).DescribeTransactionsRequest(transactional_ids=ids)
    return call(describe_transactions, 65, 0, request, coordinator)


def listing(coordinator, version=2, **filters):
    fields = {"state_filters": (), "producer_id_filters": (), "duration_filter": -1,
              "transactional_id_pattern": None, **filters}
    request = apis.make(request_module(66, version).ListTransactionsRequest, **fields)
    return call(list_transactions, 66, version, request, coordinator)[0]


@pytest.fixture
def harness():
    """Three transactional ids: 'pay-1' Ongoing on orders-0/1 for 10 minutes, 'pay-2' Empty,
    'audit' Ongoing on audit-0 for 1 minute."""
    h = TxnHarness(now_ms=wall_ms() - 10 * MINUTE_MS)
    pay1 = h.init("pay-1", timeout_ms=MINUTE_MS)
    assert h.add("pay-1", pay1.producer_id, pay1.producer_epoch, ("orders", 1), ("orders", 0)) == {
        ("orders", 0): 0, ("orders", 1): 0}
    h.init("pay-2")
    h.now_ms += 9 * MINUTE_MS
    audit = h.init("audit")
    h.add("audit", audit.producer_id, audit.producer_epoch, ("audit", 0))
    return h


def test_describe_transactions_answers_state_partitions_and_errors(harness):
    response, _ = describe(harness.coordinator, "pay-1", "pay-2", "missing")
    pay1, pay2, missing = response.transaction_states
    assert (pay1.error_code, pay1.transaction_state) == (ErrorCode.none, "Ongoing")
    assert pay1.transaction_timeout == timedelta(minutes=1)
    assert pay1.producer_id == harness.txn("pay-1").current.producer_id
    assert [(t.topic, tuple(t.partitions)) for t in pay1.topics] == [("orders", (0, 1))]
    started_ms = harness.txn("pay-1").current.start_timestamp_ms
    assert pay1.transaction_start_time == datetime.fromtimestamp(started_ms / 1000, tz=UTC)
    assert (pay2.error_code, pay2.transaction_state, pay2.topics) == (ErrorCode.none, "Empty", ())
    assert missing.error_code is ErrorCode.transactional_id_not_found


def test_client_decoder_reads_what_the_handler_writes_including_start_time_minus_one(harness):
    _, body = describe(harness.coordinator, "pay-1", "pay-2", "missing")
    frame = (7).to_bytes(4, "big") + b"\x00" + body  # correlation id, empty header tagged fields
    pay1, pay2, missing = decode_describe_transactions(frame)
    assert pay1.partitions == (("orders", 0), ("orders", 1))
    assert pay1.transaction_start_time_ms == harness.txn("pay-1").current.start_timestamp_ms
    assert (pay1.transaction_timeout_ms, pay1.transaction_state) == (MINUTE_MS, "Ongoing")
    assert pay2.transaction_start_time_ms == -1 and pay2.transaction_state == "Empty"
    assert (missing.error_code, missing.producer_id) == (ErrorCode.transactional_id_not_found, -1)


def test_client_decoder_refuses_truncated_and_padded_frames(harness):
    _, body = describe(harness.coordinator, "pay-1")
    frame = (7).to_bytes(4, "big") + b"\x00" + body
    with pytest.raises(ValueError):
        decode_describe_transactions(frame[:-3])
    with pytest.raises(ValueError):
        decode_describe_transactions(frame + b"\x00")
    hostile = frame[:9] + b"\xff\xff\xff\x0f"  # an array of 2^28 entries in 13 bytes
    with pytest.raises(ValueError):
        decode_describe_transactions(hostile)


def ids(response):
    assert response.error_code is ErrorCode.none
    return [t.transactional_id for t in response.transaction_states]


def test_list_transactions_filters_combine(harness):
    c = harness.coordinator
    assert ids(listing(c)) == ["audit", "pay-1", "pay-2"]
    assert ids(listing(c, state_filters=("Ongoing",))) == ["audit", "pay-1"]
    unknown = listing(c, state_filters=("Ongoing", "Sleeping"))
    assert unknown.unknown_state_filters == ("Sleeping",)
    pid = harness.txn("pay-2").current.producer_id
    assert ids(listing(c, version=0, producer_id_filters=(pid,))) == ["pay-2"]
    assert ids(listing(c, version=1, state_filters=("Ongoing",), duration_filter=5 * MINUTE_MS)) == ["pay-1"]
    assert ids(listing(c, version=1, state_filters=("Ongoing",), duration_filter=0)) == ["audit", "pay-1"]


def test_list_transactions_pattern_must_match_the_whole_id(harness):
    c = harness.coordinator
    assert ids(listing(c, transactional_id_pattern="pay-\\d+")) == ["pay-1", "pay-2"]
    assert ids(listing(c, transactional_id_pattern="pay")) == []
    assert ids(listing(c, transactional_id_pattern="")) == ["audit", "pay-1", "pay-2"]
    assert ids(listing(c, transactional_id_pattern="(pay|audit)-?1?", state_filters=("Ongoing",))) == [
        "audit", "pay-1"]


@pytest.mark.parametrize("pattern", ["pay-(", "[a-", "*x", "a{2,1}"])
def test_list_transactions_invalid_pattern_is_invalid_regular_expression(harness, pattern):
    response = listing(harness.coordinator, transactional_id_pattern=pattern)
    assert response.error_code is ErrorCode.invalid_regular_expression
    assert response.transaction_states == ()


def test_list_transactions_while_loading_is_coordinator_load_in_progress(harness):
    harness.coordinator.begin_loading(0, 1)
    assert listing(harness.coordinator).error_code is ErrorCode.coordinator_load_in_progress


# -- the client's abort lookup ----------------------------------------------------------------


class FakeAdmin(TransactionAdmin):
    def __init__(self, producers):
        super().__init__(client=None)
        self.producers = producers
        self.markers = []

    async def describe_producers(self, topic, partition):
        return self.producers

    async def write_txn_marker(self, topic, partition, producer_id, producer_epoch,
                               coordinator_epoch, *, commit):
        self.markers.append((topic, partition, producer_id, producer_epoch, coordinator_epoch, commit))


def producer(pid, epoch=0, coordinator_epoch=-1, start=-1):
    return ProducerState(pid, epoch, 3, 1_700_000_000_000, coordinator_epoch, start)


def test_abort_writes_an_abort_marker_for_the_producer_whose_transaction_starts_there():
    admin = FakeAdmin([producer(1, start=-1), producer(2, epoch=4, start=10), producer(3, 2, 7, 15)])
    assert asyncio.run(admin.abort_transaction("t", 0, 15)).producer_id == 3
    assert asyncio.run(admin.abort_transaction("t", 0, 10)).producer_id == 2
    # A coordinator epoch of -1 (no marker yet) is sent as 0, as kafka-transactions.sh does.
    assert admin.markers == [("t", 0, 3, 2, 7, False), ("t", 0, 2, 4, 0, False)]


def test_abort_refuses_an_offset_where_no_transaction_starts_and_says_which_do():
    admin = FakeAdmin([producer(1, start=10), producer(2, start=4)])
    with pytest.raises(NoOpenTransactionError, match=r"offset 5 of t-0 \(open transactions start at 4, 10\)"):
        asyncio.run(admin.abort_transaction("t", 0, 5))
    empty = FakeAdmin([producer(1)])
    with pytest.raises(NoOpenTransactionError, match="has no open transaction"):
        asyncio.run(empty.abort_transaction("t", 0, 0))
    assert admin.markers == [] and empty.markers == []


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--start-offset", "3", "--producer-id", "1"]])
def test_abort_needs_exactly_one_of_start_offset_and_producer_id(capsys, extra):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["transactions", "abort", "--topic", "t", "--partition", "0", *extra,
                  "--bootstrap-server", "127.0.0.1:1"])
    assert exit_.value.code == cli.EXIT_USAGE
    assert "--start-offset" in capsys.readouterr().err


def test_transactions_commands_parse():
    parser = cli.build_parser()
    args = parser.parse_args(["transactions", "list", "--state", "Ongoing", "--state", "Empty",
                              "--producer-id", "7", "--duration-ms", "1000",
                              "--transactional-id-pattern", "pay-.*"])
    assert (args.state, args.producer_id, args.duration_ms, args.transactional_id_pattern) == (
        ["Ongoing", "Empty"], [7], 1000, "pay-.*")
    args = parser.parse_args(["transactions", "describe", "--transactional-id", "pay-1"])
    assert args.transactional_id == "pay-1"
    with pytest.raises(SystemExit):
        parser.parse_args(["transactions", "abort", "--topic", "t", "--partition", "-1"])


def test_describe_table_as_kafka_transactions_sh():
    ongoing = TransactionDescription("pay-1", 1, "Ongoing", 5, 0, 60_000, 1_000, (("orders", 0), ("orders", 1)))
    header, row = describe_rows(ongoing, now_ms=4_000)
    assert dict(zip(header, row)) == {
        "CoordinatorId": 1, "TransactionalId": "pay-1", "ProducerId": 5, "ProducerEpoch": 0,
        "TransactionState": "Ongoing", "TransactionTimeoutMs": 60_000,
        "CurrentTransactionStartTimeMs": 1_000, "TransactionDurationMs": 3_000,
        "TopicPartitions": "orders-0,orders-1",
    }
    empty = TransactionDescription("pay-2", 1, "Empty", 6, 0, 60_000, -1, ())
    _, row = describe_rows(empty, now_ms=4_000)
    assert row[6:] == ("None", "None", "")


# -- find-hanging -------------------------------------------------------------------------------


def candidate(pid=7, topic="orders", partition=0):
    return OpenTransaction(topic, partition, producer(pid, start=3))


def view(pid=7, state="Ongoing", partitions=(("orders", 0),)):
    return TransactionDescription("pay", 1, state, pid, 0, 60_000, 1_000, partitions)


@pytest.mark.parametrize(("coordinator_view", "hanging"), [
    (view(), False),
    (view(state="PrepareAbort"), False),
    (None, True),                                   # no coordinator knows the producer
    (view(state="CompleteCommit"), True),           # the coordinator finished it, the log did not
    (view(state="Empty", partitions=()), True),
    (view(pid=8), True),                            # the id moved on to another producer id
    (view(partitions=(("orders", 1),)), True),      # live, but not on this partition
])
def test_is_hanging_as_kafka_transactions_sh(coordinator_view, hanging):
    assert is_hanging(candidate(), coordinator_view) is hanging


class FakeCluster(FakeAdmin):
    """Two partitions of 'orders' led by broker 1: an old open transaction of producer 7 on 0,
    a fresh one of producer 8 on 1; producer 7's transactional id is Ongoing on partition 1 only."""

    def __init__(self):
        super().__init__([])
        leaders = (SimpleNamespace(partition=0, leader_id=1), SimpleNamespace(partition=1, leader_id=1))
        topic = SimpleNamespace(name="orders", error_code=ErrorCode.none, partitions=leaders)
        metadata = SimpleNamespace(topics={"orders": topic}, brokers={1: None})

        async def fetch_metadata(topics=None):
            return metadata

        self.client = SimpleNamespace(metadata=fetch_metadata)
        self.listed_with = None

    async def describe_producers(self, topic, partition):
        if partition == 0:
            return [ProducerState(7, 0, 1, 1_000, 0, 40), producer(9)]
        return [ProducerState(8, 0, 1, 99_000, 0, 50)]

    async def list_transactions(self, states=(), producer_ids=(), **filters):
        self.listed_with = list(producer_ids)
        return [SimpleNamespace(transactional_id="pay", producer_id=7)]

    async def describe_transaction(self, transactional_id):
        return view(pid=7, partitions=(("orders", 1),))


def test_find_hanging_checks_old_open_transactions_with_their_coordinator():
    admin = FakeCluster()
    hanging = asyncio.run(admin.find_hanging(now_ms=100_000, max_transaction_timeout_ms=10_000))
    assert [(h.topic, h.partition, h.producer.producer_id) for h in hanging] == [("orders", 0, 7)]
    assert admin.listed_with == [7]  # producer 8 wrote 1 s ago: not a candidate
    assert asyncio.run(admin.find_hanging(now_ms=100_000, broker_id=2)) == []
    assert asyncio.run(admin.find_hanging(now_ms=5_000, max_transaction_timeout_ms=10_000)) == []
