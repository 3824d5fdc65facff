"""`odradek cluster`: the cluster's state, partition reassignments and preferred leader elections,
as Kafka's kafka-metadata-quorum.sh / kafka-topics.sh --describe, kafka-reassign-partitions.sh
and kafka-leader-election.sh do.

    odradek cluster status [--topic T ...]          brokers, controller, every partition's leader,
                                                    replicas and ISR, and the counts of
                                                    under-replicated, offline and reassigning ones
    odradek cluster reassign --topic T --partition P --replicas 1,2,3 [--wait [--timeout-s S]]
    odradek cluster reassign --topic T --partition P --cancel
    odradek cluster reassign --list [--topic T]
    odradek cluster elect-leaders [--topic T [--partition P]]      preferred leader election

Status reads Metadata (live brokers, controller, partitions; a replica that is not a live broker is
offline, a partition without a leader is offline, one whose ISR is smaller than its replicas is
under-replicated) and ListPartitionReassignments. Reassign sends AlterPartitionReassignments and
ElectLeaders to the controller that Metadata names (any broker would forward them); `--wait`
polls ListPartitionReassignments until the partition has stopped moving.

Only argparse is imported at start; the client and kio load when a command runs. Requests use
the highest version both CLUSTER_CLIENT_VERSIONS and the broker support. A Kafka error is one
line on stderr and exit code 1 (cli.py's convention).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

METADATA, ELECT_LEADERS, ALTER_REASSIGNMENTS, LIST_REASSIGNMENTS = 3, 43, 45, 46
# Versions this module builds and reads (one code path per API over the range).
CLUSTER_CLIENT_VERSIONS: dict[int, tuple[int, int]] = {
    METADATA: (1, 12),
    ELECT_LEADERS: (1, 2),
    ALTER_REASSIGNMENTS: (0, 1),
    LIST_REASSIGNMENTS: (0, 0),
}
ELECTION_PREFERRED = 0
ADMIN_TIMEOUT_MS = 30_000  # the requests' timeout field (Kafka's default.api.timeout.ms is 60 s)
DEFAULT_WAIT_TIMEOUT_S = 120.0
WAIT_POLL_INTERVAL_S = 0.5
MAX_REPLICAS_ARGUMENT = 1000  # --replicas entries (reassignment.MAX_REPLICAS_PER_PARTITION)


def add_parser(commands: Any, add_bootstrap: Any) -> None:
    """Add the `cluster` command and its actions to the CLI's subparsers."""
    cluster = commands.add_parser("cluster", help="cluster status, partition reassignment, leader election")
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    actions.required = True

    status = actions.add_parser("status", help="brokers, controller, partitions and their health")
    status.add_argument("--topic", action="append", default=[], metavar="T", help="only this topic, repeatable")
    add_bootstrap(status)

    reassign = actions.add_parser("reassign", help="move a partition's replicas, cancel a move, list moves")
    reassign.add_argument("--topic", metavar="T")
    reassign.add_argument("--partition", type=int, metavar="P")
    what = reassign.add_mutually_exclusive_group(required=True)
    what.add_argument("--replicas", type=_broker_list, metavar="1,2,3",
                      help="the target replicas, preferred leader first")
    what.add_argument("--cancel", action="store_true", help="cancel the partition's ongoing reassignment")
    what.add_argument("--list", action="store_true", help="list ongoing reassignments (of --topic only)")
    reassign.add_argument("--wait", action="store_true", help="with --replicas: wait until the move completes")
    reassign.add_argument("--timeout-s", type=float, default=DEFAULT_WAIT_TIMEOUT_S, metavar="S",
                          help=f"how long --wait waits (default {DEFAULT_WAIT_TIMEOUT_S:g})")
    add_bootstrap(reassign)

    elect = actions.add_parser("elect-leaders", help="make each partition's preferred replica its leader")
    elect.add_argument("--topic", metavar="T", help="only this topic (default: every partition)")
    elect.add_argument("--partition", type=int, metavar="P", help="only this partition of --topic")
    add_bootstrap(elect)


def _broker_list(text: str) -> tuple[int, ...]:
    try:
        brokers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of broker ids: {text!r}") from None
    if not brokers:
        raise argparse.ArgumentTypeError("no broker ids given")
    if len(brokers) > MAX_REPLICAS_ARGUMENT:
        raise argparse.ArgumentTypeError(f"more than {MAX_REPLICAS_ARGUMENT} broker ids")
    return brokers


async def run(client: Any, args: argparse.Namespace) -> int:
    """Run one `cluster` action with a connected `odradek.client.client.Client`."""
    if args.cluster_command == "status":
        return await _status(client, args)
    if args.cluster_command == "elect-leaders":
        return await _elect_leaders(client, args)
    if args.list:
        return await _list(client, args)
    if args.topic is None or args.partition is None:
        from odradek.cli import CliError

        raise CliError("reassign needs --topic and --partition with --replicas or --cancel", 2)
    return await _reassign(client, args)


# -- requests ------------------------------------------------------------------------------------


def _module(connection: Any, api_key: int) -> Any:
    from odradek.client.connection import UnsupportedVersionError, payload_module

    low, high = CLUSTER_CLIENT_VERSIONS[api_key]
    broker = connection.broker_versions.get(api_key)
    if broker is None or min(high, broker[1]) < max(low, broker[0]):
        raise UnsupportedVersionError(f"broker {connection.address} does not serve the cluster APIs this tool uses "
                                      f"(api key {api_key})")
    return payload_module(api_key, min(high, broker[1]), True)


async def _send(client: Any, api_key: int, build: Any, *, to_controller: bool) -> Any:
    """`build(module)` -> request, sent to the controller (else any broker); the response."""
    connection = await (client._controller() if to_controller else client._any_connection())
    return await connection.send(build(_module(connection, api_key)))


async def _metadata(client: Any, topics: list[str] | None) -> Any:
    from odradek.client.connection import make

    def build(m: Any) -> Any:
        requested = None if topics is None else tuple(make(m.MetadataRequestTopic, name=t, topic_id=None)
                                                       for t in topics)
        return make(m.MetadataRequest, topics=requested, allow_auto_topic_creation=False,
                    include_cluster_authorized_operations=False, include_topic_authorized_operations=False)

    return await _send(client, METADATA, build, to_controller=False)


async def _list_reassignments(client: Any, topics: dict[str, list[int]] | None) -> list[tuple[str, Any]]:
    """[(topic, OngoingPartitionReassignment)] from the controller."""
    from datetime import timedelta

    from odradek.client.connection import KafkaError, make
    from odradek.protocol.errors import ErrorCode

    def build(m: Any) -> Any:
        requested = None if topics is None else tuple(
            make(m.ListPartitionReassignmentsTopics, name=name, partition_indexes=tuple(indexes))
            for name, indexes in topics.items())
        return make(m.ListPartitionReassignmentsRequest, timeout=timedelta(milliseconds=ADMIN_TIMEOUT_MS),
                    topics=requested)

    response = await _send(client, LIST_REASSIGNMENTS, build, to_controller=True)
    if response.error_code != ErrorCode.none:
        raise KafkaError(response.error_code, response.error_message, context="list partition reassignments")
    return [(t.name, p) for t in response.topics for p in t.partitions]


def _ids(nodes: Any) -> str:
    return ",".join(str(int(n)) for n in nodes)


# -- status --------------------------------------------------------------------------------------


async def _status(client: Any, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaError
    from odradek.protocol.errors import ErrorCode

    response = await _metadata(client, args.topic or None)
    moving = {(name, int(p.partition_index)): p for name, p in await _list_reassignments(client, None)}
    live = {int(b.node_id) for b in response.brokers}
    controller_id = int(getattr(response, "controller_id", -1))
    print(f"Cluster: {getattr(response, 'cluster_id', None) or '-'}")
    print(f"Controller: {controller_id if controller_id >= 0 else 'none'}")
    print(f"Brokers: {len(live)}")
    for b in sorted(response.brokers, key=lambda b: int(b.node_id)):
        role = "  (controller)" if int(b.node_id) == controller_id else ""
        print(f"\tBroker: {int(b.node_id)}\tEndpoint: {b.host}:{int(b.port)}\tRack: {getattr(b, 'rack', None) or '-'}"
              f"{role}")
    under = offline = partitions = 0
    for topic in sorted(response.topics, key=lambda t: t.name):
        if topic.error_code != ErrorCode.none:
            raise KafkaError(topic.error_code, context=f"topic {topic.name!r}")
        parts = sorted(topic.partitions, key=lambda p: int(p.partition_index))
        rf = len(parts[0].replica_nodes) if parts else 0
        print(f"Topic: {topic.name}\tPartitionCount: {len(parts)}\tReplicationFactor: {rf}")
        for p in parts:
            partitions += 1
            index, leader = int(p.partition_index), int(p.leader_id)
            replicas = [int(r) for r in p.replica_nodes]
            isr = [int(r) for r in p.isr_nodes]
            down = sorted({int(r) for r in getattr(p, "offline_replicas", ())} | (set(replicas) - live))
            notes = []
            if leader < 0:
                offline += 1
                notes.append("offline")
            elif len(isr) < len(replicas):
                under += 1
                notes.append("under-replicated")
            line = (f"\tTopic: {topic.name}\tPartition: {index}\tLeader: {leader if leader >= 0 else 'none'}"
                    f"\tReplicas: {_ids(replicas)}\tIsr: {_ids(isr)}")
            if down:
                line += f"\tOffline: {_ids(down)}"
            move = moving.get((topic.name, index))
            if move is not None:
                line += f"\tAdding Replicas: {_ids(move.adding_replicas)}\tRemoving Replicas: " \
                        f"{_ids(move.removing_replicas)}"
                notes.append("reassigning")
            if notes:
                line += f"\t({', '.join(notes)})"
            print(line)
    print(f"Partitions: {partitions}\tUnder-replicated: {under}\tOffline: {offline}\t"
          f"Reassigning: {len(moving)}")
    return 0


# -- reassign ------------------------------------------------------------------------------------


async def _alter(client: Any, topic: str, partition: int, replicas: tuple[int, ...] | None) -> None:
    from datetime import timedelta

    from odradek.client.connection import KafkaError, make
    from odradek.protocol.errors import ErrorCode

    def build(m: Any) -> Any:
        target = make(m.ReassignablePartition, partition_index=partition, replicas=replicas)
        return make(m.AlterPartitionReassignmentsRequest, timeout=timedelta(milliseconds=ADMIN_TIMEOUT_MS),
                    allow_replication_factor_change=True,
                    topics=(make(m.ReassignableTopic, name=topic, partitions=(target,)),))

    response = await _send(client, ALTER_REASSIGNMENTS, build, to_controller=True)
    context = f"reassign {topic}-{partition}"
    if response.error_code != ErrorCode.none:
        raise KafkaError(response.error_code, response.error_message, context=context)
    for t in response.responses:
        for p in t.partitions:
            if p.error_code != ErrorCode.none:
                raise KafkaError(p.error_code, p.error_message, context=context)


async def _reassign(client: Any, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaClientError

    name = f"{args.topic}-{args.partition}"
    if args.cancel:
        await _alter(client, args.topic, args.partition, None)
        print(f"Successfully cancelled the reassignment of {name}.")
        return 0
    await _alter(client, args.topic, args.partition, args.replicas)
    print(f"Successfully started the reassignment of {name} to replicas {_ids(args.replicas)}.")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout_s
    while await _list_reassignments(client, {args.topic: [args.partition]}):
        if time.monotonic() > deadline:
            raise KafkaClientError(f"{name} is still being reassigned after {args.timeout_s:g} s")
        await asyncio.sleep(WAIT_POLL_INTERVAL_S)
    print(f"Reassignment of {name} completed.")
    return 0


async def _list(client: Any, args: argparse.Namespace) -> int:
    wanted = None
    if args.topic is not None:
        metadata = await client.metadata([args.topic])
        topic = metadata.topics.get(args.topic)
        indexes = [p.partition for p in topic.partitions] if topic is not None else []
        wanted = {args.topic: [args.partition] if args.partition is not None else indexes}
    ongoing = await _list_reassignments(client, wanted)
    if not ongoing:
        print("No partition reassignments in progress.")
        return 0
    print("Current partition reassignments:")
    for name, p in sorted(ongoing, key=lambda item: (item[0], int(item[1].partition_index))):
        print(f"{name}-{int(p.partition_index)}: replicas: {_ids(p.replicas)}. adding: {_ids(p.adding_replicas)}. "
              f"removing: {_ids(p.removing_replicas)}.")
    return 0


# -- elect-leaders -------------------------------------------------------------------------------


async def _elect_leaders(client: Any, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from odradek.client.connection import KafkaError, make
    from odradek.protocol.errors import ErrorCode

    partitions: dict[str, list[int]] | None = None
    if args.topic is not None:
        if args.partition is not None:
            partitions = {args.topic: [args.partition]}
        else:
            metadata = await client.metadata([args.topic])
            topic = metadata.topics.get(args.topic)
            if topic is None or topic.error_code != ErrorCode.none:
                raise KafkaError(topic.error_code if topic else ErrorCode.unknown_topic_or_partition,
                                 context=f"topic {args.topic!r}")
            partitions = {args.topic: [p.partition for p in topic.partitions]}

    def build(m: Any) -> Any:
        requested = None if partitions is None else tuple(
            make(m.TopicPartitions, topic=name, partitions=tuple(indexes)) for name, indexes in partitions.items())
        return make(m.ElectLeadersRequest, election_type=ELECTION_PREFERRED, topic_partitions=requested,
                    timeout=timedelta(milliseconds=ADMIN_TIMEOUT_MS))

    response = await _send(client, ELECT_LEADERS, build, to_controller=True)
    if response.error_code != ErrorCode.none:
        raise KafkaError(response.error_code, context="elect leaders")
    elected, failed = [], []
    for r in response.replica_election_results:
        for p in r.partition_result:
            name = f"{r.topic}-{int(p.partition_id)}"
            if p.error_code == ErrorCode.none:
                elected.append(name)
            elif p.error_code != ErrorCode.election_not_needed:
                failed.append(f"{name}: {p.error_code.name.upper()}"
                              + (f" ({p.error_message})" if p.error_message else ""))
    if elected:
        print(f"Successfully completed leader election (PREFERRED) for partitions {', '.join(sorted(elected))}")
    else:
        print("Valid replica already elected for all partitions.")
    for line in failed:
        print(f"Leader election failed for {line}")
    return 1 if failed else 0
