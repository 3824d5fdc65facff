"""`odradek groups`: list, describe, delete consumer groups and reset their offsets, as Kafka's
kafka-consumer-groups.sh does.

    odradek groups list [--state STATE ...]
    odradek groups describe GROUP [GROUP ...]      members, assignments, committed offset,
                                                   log end offset and lag per partition
    odradek groups delete GROUP [GROUP ...]
    odradek groups reset-offsets GROUP --topic TOPIC[:P,P...] (--to-earliest | --to-latest |
                                 --to-offset N | --to-timestamp MS) [--dry-run]

reset-offsets, as in Kafka, only acts on an inactive group (Empty, or unknown: a group with no
members) and commits with generation -1 (a "simple" commit); a target offset outside the log is
clamped to [log start offset, log end offset]; a timestamp after the last record resets to the log
end offset. It prints the new offsets; `--dry-run` prints them without committing.

Only argparse is imported at start (`odradek --help` stays fast); the client and kio load when a
command runs. Requests use the highest version both this module (GROUP_CLIENT_VERSIONS) and the
broker support.
"""

from __future__ import annotations

import argparse
import struct
from typing import Any

FIND_COORDINATOR, OFFSET_COMMIT, OFFSET_FETCH, LIST_GROUPS = 10, 8, 9, 16
DESCRIBE_GROUPS, DELETE_GROUPS = 15, 42
# Versions this module builds and reads (one code path per API over the range).
GROUP_CLIENT_VERSIONS: dict[int, tuple[int, int]] = {
    FIND_COORDINATOR: (1, 3),
    OFFSET_COMMIT: (2, 9),
    OFFSET_FETCH: (2, 7),
    LIST_GROUPS: (0, 5),
    DESCRIBE_GROUPS: (0, 5),
    DELETE_GROUPS: (0, 2),
}
INACTIVE_STATES = ("Empty", "Dead")
MAX_ASSIGNMENT_ENTRIES = 1_000_000  # bound on counts read from a member's assignment bytes


def add_parser(commands: Any, add_bootstrap: Any) -> None:
    """Add the `groups` command and its actions to the CLI's subparsers."""
    groups = commands.add_parser(
        "groups", help="list, describe, delete consumer groups; reset offsets"
    )
    actions = groups.add_subparsers(dest="groups_command", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="list consumer groups")
    listing.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help="only groups in this state (Empty, Stable, PreparingRebalance, ...), repeatable",
    )
    add_bootstrap(listing)

    describe = actions.add_parser(
        "describe", help="members, assignments, offsets and lag of groups"
    )
    describe.add_argument("groups", nargs="+", metavar="GROUP")
    add_bootstrap(describe)

    delete = actions.add_parser("delete", help="delete inactive groups and their committed offsets")
    delete.add_argument("groups", nargs="+", metavar="GROUP")
    add_bootstrap(delete)

    reset = actions.add_parser("reset-offsets", help="reset an inactive group's committed offsets")
    reset.add_argument("group", metavar="GROUP")
    reset.add_argument(
        "--topic",
        required=True,
        action="append",
        metavar="TOPIC[:P,P...]",
        help="topic, optionally with partitions (orders:0,2), repeatable",
    )
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="the log start offset")
    target.add_argument("--to-latest", action="store_true", help="the log end offset")
    target.add_argument("--to-offset", type=int, metavar="N", help="an offset (clamped to the log)")
    target.add_argument(
        "--to-timestamp",
        type=int,
        metavar="MS",
        help="the first offset at or after this time (ms since the epoch)",
    )
    reset.add_argument(
        "--dry-run", action="store_true", help="print the new offsets, commit nothing"
    )
    add_bootstrap(reset)


async def run(client: Any, args: argparse.Namespace) -> int:
    """Run one `groups` action with a connected `odradek.client.client.Client`."""
    action = {"list": _list, "describe": _describe, "delete": _delete, "reset-offsets": _reset}
    return await action[args.groups_command](client, args)


# -- requests ----------------------------------------------------------------------------------


def _version(connection: Any, api_key: int) -> int:
    from odradek.client.connection import UnsupportedVersionError

    low, high = GROUP_CLIENT_VERSIONS[api_key]
    broker = connection.broker_versions.get(api_key)
    if broker is None or min(high, broker[1]) < max(low, broker[0]):
        raise UnsupportedVersionError(
            f"broker {connection.address} does not serve the group APIs this tool uses"
        )
    return min(high, broker[1])


def _request(connection: Any, api_key: int, class_name: str, **fields: Any) -> Any:
    from odradek.client.connection import make, payload_module

    module = payload_module(api_key, _version(connection, api_key), True)
    return make(getattr(module, class_name), **fields)


def _entity(connection: Any, api_key: int, class_name: str, **fields: Any) -> Any:
    return _request(connection, api_key, class_name, **fields)


def _check(error_code: Any, context: str) -> None:
    from odradek.client.connection import KafkaError
    from odradek.protocol.errors import ErrorCode

    if error_code != ErrorCode.none:
        raise KafkaError(error_code, context=context)


async def _coordinator(client: Any, group: str) -> Any:
    """The connection to the group's coordinator (FindCoordinator, retried while it loads)."""
    import asyncio

    from odradek.protocol.errors import ErrorCode

    connection = await client._any_connection()
    for _ in range(20):
        response = await connection.send(
            _request(connection, FIND_COORDINATOR, "FindCoordinatorRequest", key=group, key_type=0)
        )
        if response.error_code == ErrorCode.coordinator_not_available:
            await asyncio.sleep(0.2)
            continue
        _check(response.error_code, f"find coordinator of group {group!r}")
        return await client._node(int(response.node_id))
    _check(ErrorCode.coordinator_not_available, f"find coordinator of group {group!r}")


async def _describe_group(client: Any, group: str) -> Any:
    connection = await _coordinator(client, group)
    response = await connection.send(
        _request(
            connection,
            DESCRIBE_GROUPS,
            "DescribeGroupsRequest",
            groups=(group,),
            include_authorized_operations=False,
        )
    )
    described = response.groups[0]
    _check(described.error_code, f"describe group {group!r}")
    return described


async def _committed(client: Any, group: str) -> dict[tuple[str, int], int]:
    connection = await _coordinator(client, group)
    response = await connection.send(
        _request(
            connection,
            OFFSET_FETCH,
            "OffsetFetchRequest",
            group_id=group,
            topics=None,
            require_stable=False,
        )
    )
    _check(response.error_code, f"fetch offsets of group {group!r}")
    offsets = {}
    for topic in response.topics:
        for p in topic.partitions:
            _check(p.error_code, f"fetch offset of {topic.name}-{p.partition_index}")
            if p.committed_offset >= 0:
                offsets[(topic.name, int(p.partition_index))] = int(p.committed_offset)
    return offsets


def decode_assignment(data: bytes) -> list[tuple[str, list[int]]]:
    """The (topic, partitions) of a consumer protocol assignment (ConsumerProtocolAssignment):

        version int16 | topic count int32 | per topic: name (int16 length, utf-8),
        partition count int32, partitions int32 each | user data (int32 length, bytes; v0+)

    Returns [] for empty or malformed bytes (another protocol's assignment, say)."""
    try:
        position = 2
        (count,) = struct.unpack_from(">i", data, position)
        position += 4
        if not 0 <= count <= MAX_ASSIGNMENT_ENTRIES:
            return []
        result = []
        for _ in range(count):
            (length,) = struct.unpack_from(">h", data, position)
            position += 2
            name = bytes(data[position : position + length]).decode("utf-8")
            position += length
            (n,) = struct.unpack_from(">i", data, position)
            position += 4
            if not 0 <= n <= MAX_ASSIGNMENT_ENTRIES or position + 4 * n > len(data):
                return []
            result.append((name, list(struct.unpack_from(f">{n}i", data, position))))
            position += 4 * n
        return result
    except (struct.error, UnicodeDecodeError):
        return []


# -- actions -----------------------------------------------------------------------------------


async def _list(client: Any, args: argparse.Namespace) -> int:
    connection = await client._any_connection()
    response = await connection.send(
        _request(
            connection,
            LIST_GROUPS,
            "ListGroupsRequest",
            states_filter=tuple(args.state),
            types_filter=(),
        )
    )
    _check(response.error_code, "list groups")
    groups = sorted(response.groups, key=lambda g: g.group_id)
    wanted = {s.lower() for s in args.state}
    if wanted and _version(connection, LIST_GROUPS) < 4:  # an old broker cannot filter: we do
        groups = [g for g in groups if getattr(g, "group_state", "").lower() in wanted]
    if args.state:
        rows = [("GROUP", "STATE")] + [(g.group_id, getattr(g, "group_state", "")) for g in groups]
        print(_table(rows))
    else:
        for g in groups:
            print(g.group_id)
    return 0


async def _describe(client: Any, args: argparse.Namespace) -> int:
    from odradek.client.client import LATEST_TIMESTAMP

    outputs = []
    for group in args.groups:
        described = await _describe_group(client, group)
        if described.group_state == "Dead":
            outputs.append(f"Consumer group '{group}' does not exist.")
            continue
        committed = await _committed(client, group)
        owner: dict[tuple[str, int], Any] = {}
        member_rows = [("GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT")]
        for m in described.members:
            assignment = (
                decode_assignment(m.member_assignment)
                if described.protocol_type == "consumer"
                else []
            )
            for topic, partitions in assignment:
                for p in partitions:
                    owner[(topic, p)] = m
            text = (
                ",".join(f"{t}({','.join(map(str, sorted(ps)))})" for t, ps in sorted(assignment))
                or "-"
            )
            member_rows.append(
                (
                    group,
                    m.member_id,
                    m.client_host,
                    m.client_id,
                    str(sum(len(ps) for _, ps in assignment)),
                    text,
                )
            )
        rows = [
            (
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            )
        ]
        for topic, partition in sorted(set(committed) | set(owner)):
            log_end_offset, _ = await client.list_offset(topic, partition, LATEST_TIMESTAMP)
            current = committed.get((topic, partition))
            lag = "-" if current is None else str(max(0, log_end_offset - current))
            m = owner.get((topic, partition))
            rows.append(
                (
                    group,
                    topic,
                    str(partition),
                    "-" if current is None else str(current),
                    str(log_end_offset),
                    lag,
                    m.member_id if m else "-",
                    m.client_host if m else "-",
                    m.client_id if m else "-",
                )
            )
        state = f"Consumer group '{group}' is {described.group_state} with {len(described.members)} member(s)."
        members = (
            _table(member_rows)
            if described.members
            else f"Consumer group '{group}' has no active members."
        )
        outputs.append("\n\n".join([state, _table(rows), members]))
    print("\n\n".join(outputs))
    return 0


async def _delete(client: Any, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaError

    failed = None
    for group in args.groups:
        connection = await _coordinator(client, group)
        response = await connection.send(
            _request(connection, DELETE_GROUPS, "DeleteGroupsRequest", groups_names=(group,))
        )
        try:
            _check(response.results[0].error_code, f"delete group {group!r}")
        except KafkaError as exc:
            failed = failed or exc
            continue
        print(f"Deleted consumer group '{group}'.")
    if failed is not None:
        raise failed
    return 0


def _parse_topics(specs: list[str]) -> list[tuple[str, list[int] | None]]:
    parsed = []
    for spec in specs:
        name, _, partitions = spec.partition(":")
        parsed.append((name, [int(p) for p in partitions.split(",")] if partitions else None))
    return parsed


async def _reset(client: Any, args: argparse.Namespace) -> int:
    from odradek.cli import CliError, _topic_partitions
    from odradek.client.client import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

    described = await _describe_group(client, args.group)
    if described.group_state not in INACTIVE_STATES:
        raise CliError(
            f"assignments can only be reset if the group {args.group!r} is inactive, "
            f"but it is {described.group_state} with {len(described.members)} member(s)"
        )
    targets: dict[tuple[str, int], int] = {}
    for topic, partitions in _parse_topics(args.topic):
        if partitions is None:
            partitions = await _topic_partitions(client, topic, allow_auto_topic_creation=False)
        for p in partitions:
            earliest, _ = await client.list_offset(topic, p, EARLIEST_TIMESTAMP)
            latest, _ = await client.list_offset(topic, p, LATEST_TIMESTAMP)
            if args.to_earliest:
                offset = earliest
            elif args.to_latest:
                offset = latest
            elif args.to_offset is not None:
                offset = min(max(args.to_offset, earliest), latest)
            else:
                found, _ = await client.list_offset(topic, p, args.to_timestamp)
                offset = latest if found < 0 else found
            targets[(topic, p)] = offset
    if not args.dry_run:
        await commit_offsets(client, args.group, targets)
    rows = [("GROUP", "TOPIC", "PARTITION", "NEW-OFFSET")]
    rows += [(args.group, t, str(p), str(o)) for (t, p), o in sorted(targets.items())]
    print(_table(rows))
    return 0


async def commit_offsets(client: Any, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """A "simple" OffsetCommit (generation -1, no member id), as a consumer using `assign()`
    makes: accepted by the coordinator only while the group has no active members."""
    from datetime import timedelta

    connection = await _coordinator(client, group)
    by_topic: dict[str, list[Any]] = {}
    for (topic, p), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append(
            _entity(
                connection,
                OFFSET_COMMIT,
                "OffsetCommitRequestPartition",
                partition_index=p,
                committed_offset=offset,
                committed_leader_epoch=-1,
                committed_metadata="",
            )
        )
    response = await connection.send(
        _request(
            connection,
            OFFSET_COMMIT,
            "OffsetCommitRequest",
            group_id=group,
            generation_id_or_member_epoch=-1,
            member_id="",
            group_instance_id=None,
            retention_time=timedelta(milliseconds=-1),
            topics=tuple(
                _entity(connection, OFFSET_COMMIT, "OffsetCommitRequestTopic", name=t, partitions=tuple(ps))
                for t, ps in by_topic.items()
            ),
        )
    )
    for topic in response.topics:
        for p in topic.partitions:
            _check(p.error_code, f"commit offset of {topic.name}-{p.partition_index}")


class GroupOffsets:
    """`consume --group G`: start where group G's committed offsets say, commit what was printed.

    The CLI reads as an `assign()` consumer of every partition (it does not join the group as a
    member), so its commits are "simple" commits, which the coordinator refuses while the group
    has active members (the error says so). Implements `odradek.cli.OffsetCommitter`.
    """

    def __init__(self, client: Any, group: str) -> None:
        self.client = client
        self.group = group

    async def starting_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        committed = await _committed(self.client, self.group)
        return {p: committed[(topic, p)] for p in partitions if (topic, p) in committed}

    async def commit(self, topic: str, offsets: dict[int, int]) -> None:
        await commit_offsets(self.client, self.group, {(topic, p): o for p, o in offsets.items()})


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        " ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    )
