"""Exactly-once under SIGKILL (issue #8): a consume-transform-produce loop (confluent-kafka, in a
subprocess) killed in the middle of its transactions and restarted, and a broker killed while
transactions are open, whose coordinator aborts them after their timeout on restart."""

from __future__ import annotations

import random
import time
import warnings

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from odradek.testing.process import BrokerProcess

from .txn_helpers import (
    CLIENT_TIMEOUT_S,
    TXN_OVERRIDES,
    ScriptProcess,
    create_topic,
    drain,
    group_offsets,
    list_offsets,
    plain_producer,
    raw_read_committed_offsets,
    txn_producer,
    unique,
    wait_until,
)

INPUT_PARTITIONS = 3
OPEN_TXN_TIMEOUT_MS = 8000  # transaction.timeout.ms of the transactions left open by a crash


def write_input(bootstrap: str, topic: str, transactions: int, per_transaction: int) -> list[bytes]:
    """Input written transactionally, every third transaction aborted; returns the committed values."""
    producer = txn_producer(bootstrap, unique("feeder"))
    committed: list[bytes] = []
    n = 0
    for t in range(transactions):
        producer.begin_transaction()
        aborted = t % 3 == 2
        for _ in range(per_transaction):
            value = f"{'junk' if aborted else 'in'}-{n}".encode()
            producer.produce(topic, key=str(n).encode(), value=value, partition=n % INPUT_PARTITIONS)
            if not aborted:
                committed.append(value)
            n += 1
        if aborted:
            assert producer.flush(CLIENT_TIMEOUT_S) == 0
            producer.abort_transaction(CLIENT_TIMEOUT_S)
        else:
            producer.commit_transaction(CLIENT_TIMEOUT_S)
    return committed


def run_transformer_with_kills(bootstrap: str, kills: int, transactions: int, seed: int) -> None:
    source, output, group = unique("eos-in"), unique("eos-out"), unique("eos-g")
    create_topic(bootstrap, source, INPUT_PARTITIONS)
    create_topic(bootstrap, output, INPUT_PARTITIONS)
    expected = write_input(bootstrap, source, transactions, per_transaction=12)
    inputs = drain(bootstrap, source, INPUT_PARTITIONS, read_committed=True, expect=len(expected))
    assert sorted(r.value for r in inputs) == sorted(expected)
    done_offsets = [max(r.offset for r in inputs if r.partition == p) + 1 for p in range(INPUT_PARTITIONS)]
    rng = random.Random(seed)
    transactional_id = unique("transformer")

    def start() -> ScriptProcess:
        return ScriptProcess("transform", bootstrap, source, output, group, transactional_id, 10)

    transformer = start()
    try:
        for _ in range(kills):
            # Let it make progress, then kill it while a transaction is open (records in the log).
            transformer.wait_for("committed", 1 + rng.randrange(3), 60)
            opened = transformer.count("open")
            transformer.wait_for("open", opened + 1, 60)
            time.sleep(rng.uniform(0, 0.1))
            transformer.kill()
            transformer = start()
        wait_until(lambda: group_offsets(bootstrap, group, source, INPUT_PARTITIONS) == done_offsets, 90,
                   "the transformer's offsets at the end of the input", interval_s=0.5)
        assert transformer.alive(), "\n".join(transformer.errors[-30:])
    finally:
        transformer.kill()

    out = drain(bootstrap, output, INPUT_PARTITIONS, read_committed=True, expect=len(expected))
    got = sorted(r.value for r in out)
    duplicates = len(got) - len(set(got))
    assert duplicates == 0, f"{duplicates} duplicated output records (seed {seed})"
    assert got == sorted(b"out:" + v for v in expected), f"seed {seed}"
    by_key = {r.key: r.partition for r in inputs}
    assert all(by_key[r.key] == r.partition for r in out), "output partition differs from input's"
    # The kills landed in open transactions: their records are in the log, aborted.
    uncommitted = drain(bootstrap, output, INPUT_PARTITIONS, read_committed=False, expect=len(expected))
    assert len(uncommitted) > len(out), f"no kill left aborted records behind (seed {seed})"


@pytest.fixture
def txn_broker(tmp_path):
    process = BrokerProcess(str(tmp_path / "data"), overrides=TXN_OVERRIDES).start()
    yield process
    process.stop()


def test_confluent_consume_transform_produce_killed_mid_transaction_outputs_each_input_once(txn_broker):
    run_transformer_with_kills(txn_broker.bootstrap, kills=3, transactions=24, seed=8)


@pytest.mark.slow
def test_confluent_consume_transform_produce_many_kills_slow(txn_broker, request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")
    for seed in range(3):
        run_transformer_with_kills(txn_broker.bootstrap, kills=12, transactions=120, seed=seed)


def test_broker_killed_during_open_transactions_aborts_them_after_timeout_on_restart(tmp_path):
    with BrokerProcess(str(tmp_path / "data"), overrides=TXN_OVERRIDES) as broker:
        topic, group = unique("crash"), unique("crash-g")
        create_topic(broker.bootstrap, topic, 2)
        committer = txn_producer(broker.bootstrap, unique("committer"))
        committer.begin_transaction()
        for p in range(2):
            for i in range(4):
                committer.produce(topic, value=f"before-{p}-{i}".encode(), partition=p)
        committer.commit_transaction(CLIENT_TIMEOUT_S)
        del committer

        # Two transactions left open by producers that die with the broker.
        open_ids = [unique("open"), unique("open")]
        openers = [ScriptProcess("open", broker.bootstrap, topic, 2, tid, OPEN_TXN_TIMEOUT_MS, group)
                   for tid in open_ids]
        for opener in openers:
            opener.wait_for("open", 1, 60)
        opened_at = time.monotonic()
        later = plain_producer(broker.bootstrap)
        for p in range(2):
            later.produce(topic, value=f"after-{p}".encode(), partition=p)
        assert later.flush(CLIENT_TIMEOUT_S) == 0
        del later

        before_crash = drain(broker.bootstrap, topic, 2, read_committed=False, expect=2 * (4 + 6 + 1))
        first_open_offset = [min(r.offset for r in before_crash if r.partition == p and r.value.startswith(b"open"))
                             for p in range(2)]
        assert first_open_offset == [5, 5]  # four records and the commit marker before them
        high_watermark = [max(r.offset for r in before_crash if r.partition == p) + 1 for p in range(2)]

        broker.kill()
        for opener in openers:
            opener.kill()
        broker.start()

        # The recovered log knows the open transactions: the LSO is still their first offset.
        lso = list_offsets(broker.bootstrap, topic, 2, read_committed=True)
        view = drain(broker.bootstrap, topic, 2, read_committed=True)
        wire = [raw_read_committed_offsets(broker.bootstrap, topic, p) for p in range(2)]
        if time.monotonic() - opened_at < OPEN_TXN_TIMEOUT_MS / 1000 - 1:  # certainly not yet timed out
            assert lso == first_open_offset
            assert sorted(r.value for r in view) == sorted(f"before-{p}-{i}".encode()
                                                           for p in range(2) for i in range(4))
            assert wire == [[0, 1, 2, 3], [0, 1, 2, 3]]
        else:
            warnings.warn("too slow to check the LSO while the transactions were certainly open", stacklevel=1)
        assert not any(r.value.startswith(b"open") for r in view)

        # After the timeout the coordinator aborts both: one marker each per partition.
        aborted_hw = [hw + 2 for hw in high_watermark]
        wait_until(lambda: list_offsets(broker.bootstrap, topic, 2, read_committed=True) == aborted_hw,
                   OPEN_TXN_TIMEOUT_MS / 1000 + 30, "the LSO past the aborted transactions", interval_s=0.3)
        assert list_offsets(broker.bootstrap, topic, 2, read_committed=False) == aborted_hw
        committed = drain(broker.bootstrap, topic, 2, read_committed=True, expect=10)
        assert sorted(r.value for r in committed) == sorted(
            [f"before-{p}-{i}".encode() for p in range(2) for i in range(4)] + [b"after-0", b"after-1"])
        uncommitted = drain(broker.bootstrap, topic, 2, read_committed=False, expect=22)
        assert sum(r.value.startswith(b"open") for r in uncommitted) == 12
        assert group_offsets(broker.bootstrap, group, topic, 1) == [None]  # the open offsets were aborted

        # The coordinator's state is sound: the same transactional.id starts and commits again.
        again = txn_producer(broker.bootstrap, open_ids[0])
        again.begin_transaction()
        again.produce(topic, value=b"again", partition=0)
        again.commit_transaction(CLIENT_TIMEOUT_S)
        assert b"again" in [r.value for r in drain(broker.bootstrap, topic, 2, read_committed=True, expect=11)]


def test_broker_killed_repeatedly_under_a_committing_producer_leaves_every_transaction_whole(tmp_path):
    with BrokerProcess(str(tmp_path / "data"), overrides=TXN_OVERRIDES) as broker:
        topic = unique("atomic")
        create_topic(broker.bootstrap, topic, 3)
        transactional_id = unique("looper")
        producer = ScriptProcess("commit_loop", broker.bootstrap, topic, 3, transactional_id)
        try:
            rng = random.Random(5)
            for crash in range(2):
                producer.wait_for("committed", producer.count("committed") + 3, 60)
                time.sleep(rng.uniform(0, 0.05))
                broker.kill()  # mid-transaction or mid-commit: markers partly written or not at all
                time.sleep(0.3)
                broker.start()
            producer.wait_for("committed", producer.count("committed") + 3, 90)
        finally:
            producer.kill()  # its last transaction is left open
        outcome = {int(line.split()[1]): line.split()[0] for line in producer.lines}
        committed_ids = {i for i, what in outcome.items() if what == "committed"}
        txn_producer(broker.bootstrap, transactional_id)  # fences the killed one, aborts its transaction

        wait_until(lambda: list_offsets(broker.bootstrap, topic, 3, read_committed=True)
                   == list_offsets(broker.bootstrap, topic, 3, read_committed=False), 30,
                   "the LSO at the high watermark once the last transaction is aborted", interval_s=0.3)
        seen = drain(broker.bootstrap, topic, 3, read_committed=True, expect=3 * len(committed_ids))
        per_transaction: dict[int, list[int]] = {}
        for r in seen:
            number, partition = r.value.decode().split("-")
            assert partition == f"p{r.partition}"
            per_transaction.setdefault(int(number[1:]), []).append(r.partition)
        # Whole or nothing: every visible transaction has exactly one record in each partition.
        torn = {i: ps for i, ps in per_transaction.items() if sorted(ps) != [0, 1, 2]}
        assert not torn, f"transactions seen partly or twice: {torn}"
        assert committed_ids <= set(per_transaction), f"acknowledged commits missing: " \
            f"{sorted(committed_ids - set(per_transaction))}"
        assert not {i for i, what in outcome.items() if what == "aborted"} & set(per_transaction)
