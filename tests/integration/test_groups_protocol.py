"""Group APIs over raw sockets, every version the broker advertises: FindCoordinator,
JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
DescribeGroups, DeleteGroups, OffsetDelete (kio-encoded requests, responses decoded by kio)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from odradek.protocol.apis import make
from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection, request_module

OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "3",
}
TOPIC = "orders"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("groups")), overrides=OVERRIDES) as process:
        with RawConnection(process.bootstrap) as conn:
            m = request_module(19, 7)
            topic = make(
                m.CreatableTopic,
                name=TOPIC,
                num_partitions=3,
                replication_factor=1,
                assignments=(),
                configs=(),
            )
            response = conn.request(
                make(
                    m.CreateTopicsRequest,
                    topics=(topic,),
                    timeout=timedelta(seconds=10),
                    validate_only=False,
                )
            )
            assert response.topics[0].error_code is ErrorCode.none
        yield process


@pytest.fixture
def conn(broker):
    with RawConnection(broker.bootstrap) as connection:
        yield connection


def req(api_key: int, version: int, name: str, **fields):
    return make(getattr(request_module(api_key, version), name), **fields)


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def find(conn, version: int, group: str, key_type: int = 0):
    if version >= 4:
        return conn.request(
            req(10, version, "FindCoordinatorRequest", key_type=key_type, coordinator_keys=(group,))
        )
    return conn.request(req(10, version, "FindCoordinatorRequest", key=group, key_type=key_type))


@pytest.mark.parametrize("version", range(7))
def test_find_coordinator_names_this_broker(broker, conn, version):
    response = find(conn, version, new_group())
    entry = response.coordinators[0] if version >= 4 else response
    assert entry.error_code is ErrorCode.none
    assert (entry.node_id, entry.host, entry.port) == (1, "127.0.0.1", broker.port)


def test_find_coordinator_batched_keys_and_transaction_key(broker, conn):
    groups = (new_group(), new_group())
    response = conn.request(
        req(10, 6, "FindCoordinatorRequest", key_type=0, coordinator_keys=groups)
    )
    assert [c.key for c in response.coordinators] == list(groups)
    assert all(c.error_code is ErrorCode.none for c in response.coordinators)
    txn = find(conn, 6, "my-transactional-id", key_type=1).coordinators[0]
    assert txn.error_code is ErrorCode.none
    assert (txn.node_id, txn.host, txn.port) == (1, "127.0.0.1", broker.port)
    assert find(conn, 3, "tx", key_type=1).error_code is ErrorCode.none
    assert find(conn, 3, "", key_type=1).error_code is ErrorCode.invalid_request
    assert find(conn, 3, "x", key_type=2).error_code is ErrorCode.invalid_request


def join(conn, version: int, group: str, member_id: str = "", instance_id: str | None = None):
    m = request_module(11, version)
    protocol = make(m.JoinGroupRequestProtocol, name="range", metadata=b"\x00\x01meta")
    return conn.request(
        make(
            m.JoinGroupRequest,
            group_id=group,
            session_timeout=timedelta(seconds=10),
            rebalance_timeout=timedelta(seconds=10),
            member_id=member_id,
            group_instance_id=instance_id,
            protocol_type="consumer",
            protocols=(protocol,),
            reason=None,
        )
    )


JOIN_TO = {  # JoinGroup version -> versions of the other APIs a client of that era uses
    v: {
        "sync": min(v, 5),
        "heartbeat": min(v, 4),
        "leave": min(v, 5),
        "commit": max(2, min(v + 2, 9)),
        "fetch": max(1, min(v, 9)),
        "describe": min(v, 6),
    }
    for v in range(10)
}


@pytest.mark.parametrize("version", range(10))
def test_one_member_group_lifecycle_per_join_version(conn, version):
    v = JOIN_TO[version]
    group = new_group()
    find(conn, 0, group)
    joined = join(conn, version, group)
    if version >= 4:
        assert joined.error_code is ErrorCode.member_id_required
        joined = join(conn, version, group, joined.member_id)
    assert joined.error_code is ErrorCode.none, joined
    member, generation = joined.member_id, joined.generation_id
    assert joined.leader == member and generation == 1
    assert [x.member_id for x in joined.members] == [member]

    sm = request_module(14, v["sync"])
    assignment = make(sm.SyncGroupRequestAssignment, member_id=member, assignment=b"\x00\x01mine")
    synced = conn.request(
        make(
            sm.SyncGroupRequest,
            group_id=group,
            generation_id=generation,
            member_id=member,
            group_instance_id=None,
            protocol_type="consumer",
            protocol_name="range",
            assignments=(assignment,),
        )
    )
    assert synced.error_code is ErrorCode.none and synced.assignment == b"\x00\x01mine"

    beat = conn.request(
        req(
            12,
            v["heartbeat"],
            "HeartbeatRequest",
            group_id=group,
            generation_id=generation,
            member_id=member,
            group_instance_id=None,
        )
    )
    assert beat.error_code is ErrorCode.none

    cm = request_module(8, v["commit"])
    partition = make(
        cm.OffsetCommitRequestPartition,
        partition_index=1,
        committed_offset=42,
        committed_leader_epoch=0,
        committed_metadata="meta",
    )
    committed = conn.request(
        make(
            cm.OffsetCommitRequest,
            group_id=group,
            generation_id_or_member_epoch=generation,
            member_id=member,
            group_instance_id=None,
            retention_time=timedelta(milliseconds=-1),
            topics=(make(cm.OffsetCommitRequestTopic, name=TOPIC, partitions=(partition,)),),
        )
    )
    assert committed.topics[0].partitions[0].error_code is ErrorCode.none

    assert fetch_offsets(conn, v["fetch"], group, {TOPIC: (1, 2)}) == {
        (TOPIC, 1): 42,
        (TOPIC, 2): -1,
    }

    described = conn.request(
        req(
            15,
            v["describe"],
            "DescribeGroupsRequest",
            groups=(group,),
            include_authorized_operations=False,
        )
    ).groups[0]
    assert (described.error_code, described.group_state, described.protocol_data) == (
        ErrorCode.none,
        "Stable",
        "range",
    )
    assert described.members[0].member_id == member
    assert described.members[0].member_assignment == b"\x00\x01mine"

    lv = v["leave"]
    if lv >= 3:
        lm = request_module(13, lv)
        left = conn.request(
            make(
                lm.LeaveGroupRequest,
                group_id=group,
                members=(
                    make(
                        lm.MemberIdentity, member_id=member, group_instance_id=None, reason="done"
                    ),
                ),
            )
        )
        assert left.members[0].error_code is ErrorCode.none
    else:
        left = conn.request(req(13, lv, "LeaveGroupRequest", group_id=group, member_id=member))
    assert left.error_code is ErrorCode.none
    described = conn.request(
        req(
            15,
            v["describe"],
            "DescribeGroupsRequest",
            groups=(group,),
            include_authorized_operations=False,
        )
    ).groups[0]
    assert described.group_state == "Empty" and described.members == ()

    deleted = conn.request(req(42, min(version, 2), "DeleteGroupsRequest", groups_names=(group,)))
    assert deleted.results[0].error_code is ErrorCode.none
    assert fetch_offsets(conn, v["fetch"], group, {TOPIC: (1,)}) == {(TOPIC, 1): -1}


def fetch_offsets(conn, version: int, group: str, topics: dict | None) -> dict:
    m = request_module(9, version)
    if version >= 8:
        wanted = (
            None
            if topics is None
            else tuple(
                make(m.OffsetFetchRequestTopics, name=t, partition_indexes=ps)
                for t, ps in topics.items()
            )
        )
        response = conn.request(
            make(
                m.OffsetFetchRequest,
                groups=(
                    make(
                        m.OffsetFetchRequestGroup,
                        group_id=group,
                        member_id=None,
                        member_epoch=-1,
                        topics=wanted,
                    ),
                ),
                require_stable=False,
            )
        )
        (g,) = response.groups
        assert g.error_code is ErrorCode.none
        result_topics = g.topics
    else:
        wanted = (
            None
            if topics is None
            else tuple(
                make(m.OffsetFetchRequestTopic, name=t, partition_indexes=ps)
                for t, ps in topics.items()
            )
        )
        response = conn.request(
            make(m.OffsetFetchRequest, group_id=group, topics=wanted, require_stable=False)
        )
        if version >= 2:
            assert response.error_code is ErrorCode.none
        result_topics = response.topics
    return {
        (t.name, p.partition_index): p.committed_offset for t in result_topics for p in t.partitions
    }


@pytest.mark.parametrize("commit_version", range(2, 10))
def test_simple_commit_then_fetch_every_version(conn, commit_version):
    group = new_group()
    find(conn, 0, group)
    cm = request_module(8, commit_version)
    partitions = tuple(
        make(
            cm.OffsetCommitRequestPartition,
            partition_index=p,
            committed_offset=100 + p,
            committed_leader_epoch=-1,
            committed_metadata=None,
        )
        for p in range(3)
    )
    response = conn.request(
        make(
            cm.OffsetCommitRequest,
            group_id=group,
            generation_id_or_member_epoch=-1,
            member_id="",
            group_instance_id=None,
            retention_time=timedelta(milliseconds=-1),
            topics=(
                make(cm.OffsetCommitRequestTopic, name=TOPIC, partitions=partitions),
                make(cm.OffsetCommitRequestTopic, name="no-such-topic", partitions=partitions[:1]),
            ),
        )
    )
    errors = [[p.error_code for p in t.partitions] for t in response.topics]
    assert errors == [[ErrorCode.none] * 3, [ErrorCode.unknown_topic_or_partition]]
    expected = {(TOPIC, p): 100 + p for p in range(3)}
    for fetch_version in range(1, 10):
        assert fetch_offsets(conn, fetch_version, group, {TOPIC: (0, 1, 2)}) == expected
        if fetch_version >= 2:  # a null topic list: every committed partition
            assert fetch_offsets(conn, fetch_version, group, None) == expected


def test_offset_fetch_several_groups_in_one_request(conn):
    groups = [new_group(), new_group()]
    for i, group in enumerate(groups):
        find(conn, 0, group)
        cm = request_module(8, 9)
        part = make(
            cm.OffsetCommitRequestPartition,
            partition_index=0,
            committed_offset=10 * (i + 1),
            committed_leader_epoch=-1,
            committed_metadata="",
        )
        conn.request(
            make(
                cm.OffsetCommitRequest,
                group_id=group,
                generation_id_or_member_epoch=-1,
                member_id="",
                group_instance_id=None,
                topics=(make(cm.OffsetCommitRequestTopic, name=TOPIC, partitions=(part,)),),
            )
        )
    m = request_module(9, 9)
    response = conn.request(
        make(
            m.OffsetFetchRequest,
            require_stable=True,
            groups=tuple(
                make(
                    m.OffsetFetchRequestGroup,
                    group_id=g,
                    member_id=None,
                    member_epoch=-1,
                    topics=None,
                )
                for g in groups
            ),
        )
    )
    got = {
        g.group_id: [
            (t.name, p.partition_index, p.committed_offset) for t in g.topics for p in t.partitions
        ]
        for g in response.groups
    }
    assert got == {groups[0]: [(TOPIC, 0, 10)], groups[1]: [(TOPIC, 0, 20)]}


@pytest.mark.parametrize(
    "version,error", [(0, ErrorCode.none), (5, ErrorCode.none), (6, ErrorCode.group_id_not_found)]
)
def test_describe_unknown_group(conn, version, error):
    group = new_group()
    find(conn, 0, group)
    described = conn.request(
        req(
            15,
            version,
            "DescribeGroupsRequest",
            groups=(group,),
            include_authorized_operations=False,
        )
    ).groups[0]
    assert (described.error_code, described.group_state) == (error, "Dead")


def test_list_groups_with_state_and_type_filters(conn):
    stable, empty = new_group(), new_group()
    for group in (stable, empty):
        find(conn, 0, group)
        first = join(conn, 9, group)
        joined = join(conn, 9, group, first.member_id)
        sm = request_module(14, 5)
        conn.request(
            make(
                sm.SyncGroupRequest,
                group_id=group,
                generation_id=joined.generation_id,
                member_id=joined.member_id,
                protocol_type="consumer",
                protocol_name="range",
                assignments=(
                    make(sm.SyncGroupRequestAssignment, member_id=joined.member_id, assignment=b""),
                ),
            )
        )
    lm = request_module(13, 5)
    conn.request(
        make(
            lm.LeaveGroupRequest,
            group_id=empty,
            members=(
                make(
                    lm.MemberIdentity,
                    member_id=joined.member_id,
                    group_instance_id=None,
                    reason=None,
                ),
            ),
        )
    )

    def listed(version, **filters):
        response = conn.request(req(16, version, "ListGroupsRequest", **filters))
        assert response.error_code is ErrorCode.none
        return {g.group_id: getattr(g, "group_state", None) for g in response.groups}

    assert {stable, empty} <= set(listed(0))
    everything = listed(5)
    assert (everything[stable], everything[empty]) == ("Stable", "Empty")
    only_empty = listed(4, states_filter=("Empty",))
    assert empty in only_empty and stable not in only_empty
    assert listed(5, types_filter=("consumer",)) == {}
    assert stable in listed(5, types_filter=("classic",))


def test_offset_delete_and_delete_groups_errors(conn):
    group = new_group()
    find(conn, 0, group)
    cm = request_module(8, 9)
    parts = tuple(
        make(
            cm.OffsetCommitRequestPartition,
            partition_index=p,
            committed_offset=5,
            committed_leader_epoch=-1,
            committed_metadata="",
        )
        for p in range(2)
    )
    conn.request(
        make(
            cm.OffsetCommitRequest,
            group_id=group,
            generation_id_or_member_epoch=-1,
            member_id="",
            group_instance_id=None,
            topics=(make(cm.OffsetCommitRequestTopic, name=TOPIC, partitions=parts),),
        )
    )
    dm = request_module(47, 0)
    response = conn.request(
        make(
            dm.OffsetDeleteRequest,
            group_id=group,
            topics=(
                make(
                    dm.OffsetDeleteRequestTopic,
                    name=TOPIC,
                    partitions=(make(dm.OffsetDeleteRequestPartition, partition_index=0),),
                ),
            ),
        )
    )
    assert response.error_code is ErrorCode.none
    assert response.topics[0].partitions[0].error_code is ErrorCode.none
    assert fetch_offsets(conn, 9, group, {TOPIC: (0, 1)}) == {(TOPIC, 0): -1, (TOPIC, 1): 5}

    missing = new_group()
    find(conn, 0, missing)
    deleted = conn.request(req(42, 2, "DeleteGroupsRequest", groups_names=(group, missing, "")))
    assert [(r.group_id, r.error_code) for r in deleted.results] == [
        (group, ErrorCode.none),
        (missing, ErrorCode.group_id_not_found),
        ("", ErrorCode.invalid_group_id),
    ]


@pytest.fixture(autouse=True)
def broker_log_on_failure(broker, request):
    """Print the broker's log lines of a failed test (handler errors close connections)."""
    start = len(broker.output)
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        print("".join(broker.output[start:]))


def test_offsets_topic_creation_completes_when_the_client_hangs_up_mid_find_coordinator(tmp_path):
    """librdkafka drops its bootstrap connection while FindCoordinator creates __consumer_offsets;
    the creation must still host the partitions, or every group gets NOT_COORDINATOR."""
    with BrokerProcess(str(tmp_path / "data"), overrides=OVERRIDES) as fresh:
        for attempt in range(3):
            group = f"hangup-{attempt}"
            with RawConnection(fresh.bootstrap) as first:
                first.send(req(10, 3, "FindCoordinatorRequest", key=group, key_type=0))
            # closed at once, most likely while the topic creation is in flight
            with RawConnection(fresh.bootstrap) as second:
                assert find(second, 3, group).error_code is ErrorCode.none
                joined = join(second, 9, group)
                assert joined.error_code is ErrorCode.member_id_required, joined


def test_offsets_load_after_the_cleaner_compacted_consumer_offsets_and_a_kill_9(tmp_path):
    """The loader replays a compacted log (offset gaps, removed batches) to the latest commits."""
    import glob
    import os
    import time

    data_dir = str(tmp_path / "data")
    overrides = {
        "offsets.topic.num.partitions": "1",
        "offsets.topic.segment.bytes": "1048576",  # Kafka's least segment size
        "log.cleaner.backoff.ms": "100",
        "log.cleaner.min.cleanable.ratio": "0.01",
    }
    partitions = 1000  # per commit: one batch of ~36 KB

    def commit(conn, base: int) -> None:
        m = request_module(8, 9)
        parts = tuple(
            make(
                m.OffsetCommitRequestPartition,
                partition_index=p,
                committed_offset=base + p,
                committed_leader_epoch=-1,
                committed_metadata="",
            )
            for p in range(partitions)
        )
        topic = make(m.OffsetCommitRequestTopic, name=TOPIC, partitions=parts)
        response = conn.request(
            make(
                m.OffsetCommitRequest,
                group_id="g",
                generation_id_or_member_epoch=-1,
                member_id="",
                group_instance_id=None,
                topics=(topic,),
            )
        )
        assert {p.error_code for p in response.topics[0].partitions} == {ErrorCode.none}

    def first_segment_bytes() -> int:
        return os.path.getsize(min(glob.glob(f"{data_dir}/__consumer_offsets-0/*.log")))

    with BrokerProcess(data_dir, overrides=overrides) as fresh:
        with RawConnection(fresh.bootstrap) as conn:
            m = request_module(19, 7)
            topic = make(
                m.CreatableTopic,
                name=TOPIC,
                num_partitions=1,
                replication_factor=1,
                assignments=(),
                configs=(),
            )
            conn.request(
                make(
                    m.CreateTopicsRequest,
                    topics=(topic,),
                    timeout=timedelta(seconds=10),
                    validate_only=False,
                )
            )
            assert find(conn, 3, "g").error_code is ErrorCode.none
            for i in range(30):  # ~1.1 MB: the first segment rolls and becomes cleanable
                commit(conn, i * 10_000)
        full_bytes = first_segment_bytes()
        deadline = time.monotonic() + 15
        while first_segment_bytes() > full_bytes // 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first_segment_bytes() <= full_bytes // 4, (
            "the cleaner did not compact __consumer_offsets"
        )
        fresh.kill()
        fresh.start()
        with RawConnection(fresh.bootstrap) as conn:
            deadline = time.monotonic() + 10
            while True:
                m = request_module(9, 7)
                response = conn.request(
                    make(m.OffsetFetchRequest, group_id="g", topics=None, require_stable=False)
                )
                if (
                    response.error_code is not ErrorCode.coordinator_load_in_progress
                    or time.monotonic() > deadline
                ):
                    break
                time.sleep(0.05)
            assert response.error_code is ErrorCode.none
            offsets = {
                p.partition_index: p.committed_offset for t in response.topics for p in t.partitions
            }
            assert offsets == {p: 290_000 + p for p in range(partitions)}
