"""Cluster mode's "done when" (issue #7): etcd and three brokers as subprocesses on loopback.

Every test reads the cluster the way a client does (Metadata, FindCoordinator over the wire) and
writes with real clients (confluent-kafka). Faults are real: SIGKILL and restart, SIGSTOP and
SIGCONT. Failover times (leader loss -> first acknowledged produce of a record sent after the
loss) are printed; run with `-s` to see them.

The slow variant of the leader kill loop (100 cycles) runs only with `-m slow`.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import build_batch
from odradek.testing.cluster import (
    ETCD_BINARY,
    ClusterProcess,
    ContinuousConsumer,
    ContinuousProducer,
    read_partitions,
    wait_until,
)

pytestmark = [
    pytest.mark.skipif(ETCD_BINARY is None, reason="etcd is not installed (Debian: etcd-server)"),
    pytest.mark.timeout(240),
]

ALL = {1, 2, 3}
SESSION_TIMEOUT_MS = 2000  # broker.session.timeout.ms: a SIGKILLed broker's lease is gone in ~2-3 s
BASE_OVERRIDES = {
    "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
    "replica.fetch.backoff.ms": "100",
    "replica.lag.time.max.ms": "5000",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.num.partitions": "3",
}
TOPIC_CONFIGS = {"min.insync.replicas": "2"}
ELECTION_TIMEOUT_S = 20.0  # leader loss -> a new leader in Metadata: a lease TTL plus slack
CATCH_UP_TIMEOUT_S = 30.0  # a restarted broker back in the ISR


def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def summary(name: str, times_s: list[float]) -> str:
    if not times_s:
        return f"{name}: none"
    ms = sorted(t * 1000 for t in times_s)
    return (f"{name}: n={len(ms)} min={ms[0]:.0f} ms median={statistics.median(ms):.0f} ms "
            f"max={ms[-1]:.0f} ms")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One healthy cluster shared by the tests that inject no fault."""
    with ClusterProcess(tmp_path_factory.mktemp("cluster"), overrides=BASE_OVERRIDES) as running:
        running.wait_for_brokers(ALL)
        running.wait_for_controller()
        yield running


@pytest.fixture
def new_cluster(tmp_path):
    """A factory for a cluster of the test's own (faults), closed at the end of the test."""
    made: list[ClusterProcess] = []

    def make(**overrides: str) -> ClusterProcess:
        running = ClusterProcess(tmp_path / f"cluster-{len(made)}", overrides={**BASE_OVERRIDES, **overrides})
        made.append(running)
        running.start_all()
        running.wait_for_brokers(ALL)
        running.wait_for_controller()
        return running

    yield make
    for running in made:
        running.close()


def check_log_against_acks(cluster: ClusterProcess, topic: str, producer: ContinuousProducer,
                           partitions: int = 1) -> list[tuple[int, int, bytes]]:
    """Read the whole topic back and assert: every acknowledged record is at the offset its
    acknowledgement named, no value appears twice; returns the records."""
    records = read_partitions(cluster.bootstrap, topic, range(partitions))
    at = {(p, o): v for p, o, v in records}
    lost = [(seq, p, o) for seq, (p, o, _) in sorted(producer.acked.items()) if at.get((p, o)) != str(seq).encode()]
    counts: dict[bytes, int] = {}
    for _, _, value in records:
        counts[value] = counts.get(value, 0) + 1
    duplicates = sorted(int(v) for v, n in counts.items() if n > 1)
    assert not lost, f"{len(lost)} acknowledged records lost or moved, first {lost[:10]}"
    assert not duplicates, f"{len(duplicates)} values stored more than once, first {duplicates[:10]}"
    return records


# -- basic -------------------------------------------------------------------------------------


def test_metadata_from_every_broker_lists_three_brokers_and_the_same_controller(cluster):
    controllers = set()
    for node in ALL:
        response = cluster.metadata([], via=node)
        assert {b.node_id for b in response.brokers} == ALL
        assert {b.port for b in response.brokers} == {cluster.brokers[n].port for n in ALL}
        controllers.add(response.controller_id)
    assert len(controllers) == 1 and controllers <= ALL, controllers


def test_describe_cluster_from_every_broker_names_three_brokers_and_the_controller(cluster):
    controller_id = cluster.controller()
    for node in ALL:
        with cluster.connect(node) as conn:
            m = conn.module("describe_cluster", 0)
            response = conn.request(m.DescribeClusterRequest(include_cluster_authorized_operations=False))
        assert response.error_code == ErrorCode.none
        assert {b.broker_id for b in response.brokers} == ALL
        assert response.controller_id == controller_id


def test_topic_with_replication_factor_3_is_created_through_any_broker(cluster):
    from confluent_kafka.admin import AdminClient, NewTopic

    for node in ALL:
        name = topic_name()
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap_of(node), "log_level": 0})
        futures = admin.create_topics([NewTopic(name, 3, 3, config=TOPIC_CONFIGS)], operation_timeout=15)
        futures[name].result(timeout=20)
        for partition in range(3):
            cluster.wait_for_leader(name, partition)
            cluster.wait_for_isr(name, partition, ALL)
        leaders = {cluster.leader_of(name, p) for p in range(3)}
        assert leaders == ALL, f"leaders of {name} not spread over the brokers: {leaders}"
        for partition in range(3):
            p = cluster.partition_metadata(name, partition)
            assert set(p.replica_nodes) == ALL


def test_create_topics_sent_to_a_non_controller_is_forwarded_to_the_controller(cluster):
    """Kafka's KRaft forwarding (the broker asks the controller for the client), so a client that
    sends CreateTopics to any broker gets its topic; Metadata from every broker then shows it."""
    controller_id = cluster.controller()
    other = min(ALL - {controller_id})
    name = topic_name()
    with cluster.connect(other) as conn:
        m = conn.module("create_topics", 7)
        response = conn.request(m.CreateTopicsRequest(
            topics=(m.CreatableTopic(name=name, num_partitions=1, replication_factor=3,
                                     assignments=(), configs=()),),
            timeout=timedelta(seconds=10), validate_only=False), timeout_s=15)
    [result] = response.topics
    assert (result.error_code, result.num_partitions, result.replication_factor) == (ErrorCode.none, 1, 3)
    cluster.wait_for_leader(name, 0)
    for node in ALL:
        assert set(cluster.partition_metadata(name, 0, via=node).replica_nodes) == ALL


def produce_to(cluster: ClusterProcess, node: int, topic: str) -> tuple[object, object]:
    """One acks=all Produce v10 of one record to partition 0 sent to `node`: (partition response,
    response)."""
    with cluster.connect(node) as conn:
        m = conn.module("produce", 10)
        batch = build_batch([(None, b"to-a-follower", [], int(time.time() * 1000))])
        response = conn.request(m.ProduceRequest(
            transactional_id=None, acks=-1, timeout=timedelta(seconds=5),
            topic_data=(m.TopicProduceData(name=topic, partition_data=(
                m.PartitionProduceData(index=0, records=batch),)),)))
    [partition] = response.responses[0].partition_responses
    return partition, response


def test_produce_to_a_follower_gets_not_leader_or_follower(cluster):
    topic = topic_name()
    cluster.create_topic(topic, replication_factor=3, configs=TOPIC_CONFIGS)
    leader = cluster.wait_for_leader(topic, 0)
    for follower in ALL - {leader}:
        partition, _ = produce_to(cluster, follower, topic)
        assert partition.error_code == ErrorCode.not_leader_or_follower


def test_produce_to_a_follower_names_the_current_leader_and_its_endpoint_kip_951(cluster):
    topic = topic_name()
    cluster.create_topic(topic, replication_factor=3, configs=TOPIC_CONFIGS)
    leader = cluster.wait_for_leader(topic, 0)
    epoch = cluster.partition_metadata(topic, 0).leader_epoch
    partition, response = produce_to(cluster, min(ALL - {leader}), topic)
    assert partition.error_code == ErrorCode.not_leader_or_follower
    # KIP-951: the current leader and its endpoint, so the client moves without a Metadata round trip.
    assert (partition.current_leader.leader_id, partition.current_leader.leader_epoch) == (leader, epoch)
    endpoints = {e.node_id: e.port for e in response.node_endpoints}
    assert endpoints.get(leader) == cluster.brokers[leader].port


def test_confluent_producer_bootstrapped_at_a_follower_moves_to_the_leader(cluster):
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = topic_name()
    cluster.create_topic(topic, replication_factor=3, configs=TOPIC_CONFIGS)
    leader = cluster.wait_for_leader(topic, 0)
    cluster.wait_for_isr(topic, 0, ALL)
    follower = min(ALL - {leader})
    delivered: list = []
    producer = Producer({"bootstrap.servers": cluster.bootstrap_of(follower), "acks": "all",
                         "enable.idempotence": True, "log_level": 0})
    for i in range(20):
        producer.produce(topic, value=b"%d" % i, on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert [err for err, _ in delivered if err is not None] == []
    assert sorted(offset for _, offset in delivered) == list(range(20))
    # The high watermark covers them all (every ISR member has them), seen through the follower.
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_of(follower), "group.id": "g-" + topic,
                         "log_level": 0})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert high == 20
    finally:
        consumer.close()


# -- the partition leader killed and restarted ----------------------------------------------------


def run_leader_kill_loop(cluster: ClusterProcess, cycles: int) -> None:
    topic = topic_name()
    cluster.create_topic(topic, replication_factor=3, configs=TOPIC_CONFIGS)
    cluster.wait_for_isr(topic, 0, ALL)
    producer = ContinuousProducer(cluster.bootstrap, topic, records_per_s=300)
    watcher = ContinuousConsumer(cluster.bootstrap, topic, [0])
    producer.start()
    watcher.start()
    election_s: list[float] = []
    failover_s: list[float] = []
    catch_up_s: list[float] = []
    try:
        wait_until(lambda: len(producer.acked) >= 50, 20, message="first acknowledgements")
        for cycle in range(cycles):
            try:
                leader = cluster.wait_for_leader(topic, 0)
                acked_before = len(producer.acked)
                t_kill = cluster.kill(leader)
                cluster.wait_for_leader(topic, 0, not_in={leader}, timeout_s=ELECTION_TIMEOUT_S)
                election_s.append(time.monotonic() - t_kill)
                failover_s.append(producer.wait_for_ack_after(t_kill, timeout_s=ELECTION_TIMEOUT_S + 10))
                t_start = time.monotonic()
                cluster.start(leader)
                cluster.wait_for_isr(topic, 0, ALL, timeout_s=CATCH_UP_TIMEOUT_S)
                catch_up_s.append(time.monotonic() - t_start)
                assert len(producer.acked) > acked_before, "no progress"
                assert not producer.fatal, producer.fatal
            except AssertionError as exc:
                raise AssertionError(f"cycle {cycle} (killed broker {leader}): {exc}\n"
                                     + cluster.diagnostics([topic])) from exc
        wait_until(lambda: len(producer.acked) >= acked_before + 50, 20, message="acks after the last cycle")
    finally:
        left = producer.stop_and_flush(60)
        print(f"\nleader kill loop, {cycles} cycles, {len(producer.acked)} acked of {producer.sent} sent, "
              f"errors {producer.errors_now()}")
        print(summary("  leader loss -> new leader in Metadata", election_s))
        print(summary("  leader loss -> first acknowledged produce", failover_s))
        print(summary("  restart -> back in the ISR", catch_up_s))
    assert left == 0, f"{left} records never delivered"
    assert not producer.fatal, producer.fatal
    assert len(producer.acked) == producer.sent, f"delivery errors {producer.errors}"
    records = check_log_against_acks(cluster, topic, producer)
    # The consumer that ran through every failover resumes and reads everything, and never saw
    # a record that the log does not hold at that offset (nothing above the high watermark).
    high = max(o for _, o, _ in records) + 1
    try:
        watcher.wait_for({0: high}, timeout_s=30)
    finally:
        watcher.stop()
    stored = {(p, o): v for p, o, v in records}
    changed = [(k, v, stored.get(k)) for k, v in watcher.seen.items() if stored.get(k) != v]
    assert not changed, f"consumer saw records the log no longer holds: {changed[:10]}"
    assert not watcher.fatal, watcher.fatal


def test_partition_leader_sigkilled_and_restarted_10_times_loses_and_duplicates_nothing(new_cluster):
    run_leader_kill_loop(new_cluster(), cycles=10)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_partition_leader_sigkilled_and_restarted_100_times_loses_and_duplicates_nothing(new_cluster, request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")
    run_leader_kill_loop(new_cluster(), cycles=100)


def test_sigterm_moves_the_leadership_away_before_the_broker_exits(new_cluster):
    """Controlled shutdown: with a lease far longer than the test's waits, a new leader can only
    come from the stopping broker asking the controller, not from its lease expiring."""
    cluster = new_cluster(**{"broker.session.timeout.ms": "15000"})
    topic = topic_name()
    cluster.create_topic(topic, replication_factor=3, configs=TOPIC_CONFIGS)
    cluster.wait_for_isr(topic, 0, ALL)
    producer = ContinuousProducer(cluster.bootstrap, topic, records_per_s=300)
    producer.start()
    try:
        wait_until(lambda: len(producer.acked) >= 30, 20, message="first acknowledgements")
        leader = cluster.wait_for_leader(topic, 0)
        t_stop = time.monotonic()
        assert cluster.stop(leader) == 0
        stopped_s = time.monotonic() - t_stop
        new_leader = cluster.wait_for_leader(topic, 0, not_in={leader}, timeout_s=3)
        failover_s = producer.wait_for_ack_after(t_stop, timeout_s=5)
        print(f"\nleader {leader} stopped with SIGTERM in {stopped_s * 1000:.0f} ms; leader {new_leader}, "
              f"first acknowledged produce {failover_s * 1000:.0f} ms after the signal")
        cluster.start(leader)
        cluster.wait_for_isr(topic, 0, ALL, timeout_s=CATCH_UP_TIMEOUT_S)
    finally:
        left = producer.stop_and_flush(60)
    assert left == 0 and not producer.fatal, (left, producer.fatal)
    check_log_against_acks(cluster, topic, producer)


# -- the controller killed ------------------------------------------------------------------------


def test_controller_sigkilled_a_new_one_takes_over_and_leadership_changes_keep_working(new_cluster):
    cluster = new_cluster()
    topic = topic_name()
    cluster.create_topic(topic, partitions=3, replication_factor=3, configs=TOPIC_CONFIGS)
    for p in range(3):
        cluster.wait_for_isr(topic, p, ALL)
    producer = ContinuousProducer(cluster.bootstrap, topic, partitions=3, records_per_s=300)
    producer.start()
    try:
        wait_until(lambda: len(producer.acked) >= 30, 20, message="first acknowledgements")
        old_controller = cluster.controller()
        led_by_old = [p for p in range(3) if cluster.leader_of(topic, p) == old_controller]
        t_kill = cluster.kill(old_controller)
        new_controller = cluster.wait_for_controller(not_in={old_controller}, timeout_s=10)
        takeover_s = time.monotonic() - t_kill
        # The partitions the old controller led get new leaders (decided by the new controller).
        for p in led_by_old:
            cluster.wait_for_leader(topic, p, not_in={old_controller}, timeout_s=ELECTION_TIMEOUT_S)
        failover_s = producer.wait_for_ack_after(t_kill, timeout_s=ELECTION_TIMEOUT_S)
        print(f"\ncontroller {old_controller} killed: controller {new_controller} after {takeover_s * 1000:.0f} ms, "
              f"first acknowledged produce after {failover_s * 1000:.0f} ms")
        assert takeover_s < 10

        # Leadership changes keep working under the new controller: kill a partition leader
        # that is not the controller, its partitions move.
        cluster.start(old_controller)
        for p in range(3):
            cluster.wait_for_isr(topic, p, ALL, timeout_s=CATCH_UP_TIMEOUT_S)
        assert cluster.controller() == new_controller, "a restarted broker must not take the controller back"
        leaders = {p: cluster.leader_of(topic, p) for p in range(3)}
        victim = max(ALL - {new_controller}, key=lambda n: sum(1 for leader in leaders.values() if leader == n))
        led_by_victim = [p for p, leader in leaders.items() if leader == victim]
        assert led_by_victim, f"no partition led outside the controller: {leaders}"
        t_kill = cluster.kill(victim)
        for p in led_by_victim:
            cluster.wait_for_leader(topic, p, not_in={victim}, timeout_s=ELECTION_TIMEOUT_S)
        print(f"broker {victim} killed under the new controller: partitions {led_by_victim} moved "
              f"after {(time.monotonic() - t_kill) * 1000:.0f} ms")
        # And metadata changes go through the new controller.
        other = topic_name()
        cluster.create_topic(other, replication_factor=2, configs={})
        cluster.start(victim)
    finally:
        left = producer.stop_and_flush(60)
    assert left == 0 and not producer.fatal, (left, producer.fatal)
    check_log_against_acks(cluster, topic, producer, partitions=3)


# -- a follower paused beyond replica.lag.time.max.ms -----------------------------------------------


def test_follower_paused_beyond_replica_lag_time_leaves_the_isr_and_rejoins_after_sigcont(new_cluster):
    lag_ms = 1500
    # The lease outlives the pause: the follower leaves the ISR for lagging, not for dying.
    cluster = new_cluster(**{"replica.lag.time.max.ms": str(lag_ms), "broker.session.timeout.ms": "10000"})
    topic = topic_name()
    cluster.create_topic(topic, replication_factor=3, configs=TOPIC_CONFIGS)
    cluster.wait_for_isr(topic, 0, ALL)
    leader = cluster.wait_for_leader(topic, 0)
    follower = max(ALL - {leader, cluster.controller()} or ALL - {leader})
    producer = ContinuousProducer(cluster.bootstrap, topic, records_per_s=200)
    producer.start()
    try:
        wait_until(lambda: len(producer.acked) >= 30, 20, message="first acknowledgements")
        t_pause = cluster.pause(follower)
        cluster.wait_for_isr(topic, 0, ALL - {follower}, timeout_s=8)
        shrink_s = time.monotonic() - t_pause
        assert shrink_s * 1000 >= lag_ms * 0.9, f"ISR shrank after {shrink_s * 1000:.0f} ms, before the lag time"
        assert follower in cluster.live_brokers(), "the paused broker's registration should still be live"
        # acks=all keeps succeeding with 2 in-sync replicas (min.insync.replicas=2).
        t_shrunk = time.monotonic()
        producer.wait_for_ack_after(t_shrunk, timeout_s=10)
        time.sleep(1.0)  # more records the paused follower misses
        cluster.resume(follower)
        t_resume = time.monotonic()
        cluster.wait_for_isr(topic, 0, ALL, timeout_s=CATCH_UP_TIMEOUT_S)
        print(f"\nfollower {follower} paused: out of the ISR after {shrink_s * 1000:.0f} ms "
              f"(replica.lag.time.max.ms={lag_ms}), back {(time.monotonic() - t_resume) * 1000:.0f} ms after SIGCONT")
        assert cluster.leader_of(topic, 0) == leader
    finally:
        cluster.resume(follower)
        left = producer.stop_and_flush(60)
    assert left == 0 and not producer.fatal, (left, producer.fatal)
    check_log_against_acks(cluster, topic, producer)


# -- a consumer group through a coordinator failover -------------------------------------------------


def test_consumer_group_keeps_consuming_through_a_coordinator_failover_without_losing_commits(new_cluster):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    cluster = new_cluster()
    topic = topic_name()
    group = "g-" + topic
    partitions = 3
    cluster.create_topic(topic, partitions=partitions, replication_factor=3, configs=TOPIC_CONFIGS)
    producer = ContinuousProducer(cluster.bootstrap, topic, partitions=partitions, records_per_s=300)
    producer.start()
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 2_000,
                         "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200, "log_level": 0})
    consumer.subscribe([topic])
    consumed: set[bytes] = set()
    commits_acked: list[dict[int, int]] = []
    commit_errors: list[str] = []

    def consume_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            messages = consumer.consume(200, 0.2)
            for msg in messages:
                if not msg.error():
                    consumed.add(msg.value())
            if messages:
                try:
                    offsets = consumer.commit(asynchronous=False)
                    commits_acked.append({tp.partition: tp.offset for tp in offsets if tp.offset >= 0})
                except KafkaException as exc:  # retriable while the coordinator moves
                    commit_errors.append(str(exc))

    try:
        consume_for(4.0)
        assert commits_acked, "no commit before the failover"
        coordinator = wait_until(lambda: cluster.coordinator_of(group), 10, message="the group coordinator")
        committed_before = {}
        for offsets in commits_acked:
            committed_before.update(offsets)
        t_kill = cluster.kill(coordinator)
        new_coordinator = wait_until(
            lambda: (c := cluster.coordinator_of(group)) not in (None, coordinator) and c, ELECTION_TIMEOUT_S,
            message="a new group coordinator")
        moved_s = time.monotonic() - t_kill
        n_commits = len(commits_acked)
        consume_for(6.0)
        assert len(commits_acked) > n_commits, f"no commit succeeded after the failover: {commit_errors[-5:]}"
        print(f"\ngroup coordinator {coordinator} killed: FindCoordinator names {new_coordinator} after "
              f"{moved_s * 1000:.0f} ms; commit errors meanwhile: {len(commit_errors)}")
        # Commits made before the failover survive it (the new coordinator loaded them).
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        for tp in committed:
            assert tp.offset >= committed_before.get(tp.partition, -1), (tp, committed_before)
        cluster.start(coordinator)
        left = producer.stop_and_flush(60)
        assert left == 0 and not producer.fatal
        # The consumer drains everything acknowledged, then commits the end.
        wanted = {str(seq).encode() for seq in producer.acked}
        deadline = time.monotonic() + 30
        while not wanted <= consumed and time.monotonic() < deadline:
            consume_for(1.0)
        missing = wanted - consumed
        assert not missing, f"{len(missing)} acknowledged records never consumed"
        consume_for(1.0)
    finally:
        consumer.close()
        if producer.is_alive():
            producer.stop_and_flush(10)
    # A new member of the group starts at the committed offsets: the end of every partition.
    ends = {}
    probe = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "log_level": 0})
    try:
        committed = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        for tp in committed:
            _, ends[tp.partition] = probe.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            assert tp.offset == ends[tp.partition], f"committed {tp} but the log ends at {ends[tp.partition]}"
    finally:
        probe.close()
