"""AlterPartitionReassignments (API key 45), versions 0-1.

Moves partitions' replicas to target brokers, or (replicas null) cancels an ongoing move; the
controller decides (metadata/reassignment.py) and answers once the start is written to the
metadata quorum, not when the move completes: completion follows as the new replicas catch up
and join the ISR (ListPartitionReassignments shows what is still moving). v1 (KIP-860) adds
`allow_replication_factor_change`: false refuses a target of another size.
Single node: every partition has the one replica (this broker), so a target of exactly [this
broker] succeeds without change, any other target is INVALID_REPLICA_ASSIGNMENT (no such broker
is registered) and a cancel is NO_REASSIGNMENT_IN_PROGRESS.
Cluster mode: a broker that is not the controller forwards the request (connection.py's
FORWARDED_APIS); NOT_CONTROLLER (top level) when the controller changed meanwhile.
Per partition: UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT,
INVALID_REPLICATION_FACTOR, NO_REASSIGNMENT_IN_PROGRESS; top level NOT_CONTROLLER,
REQUEST_TIMED_OUT.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.metadata.etcd_store import MetadataQuorumError
from odradek.metadata.reassignment import ReassignmentRequest, ReassignmentResult, invalid_target
from odradek.protocol.errors import ErrorCode

MAX_PARTITIONS = 100_000  # partitions in one request: refused as INVALID_REQUEST above this


def _requests(request) -> list[ReassignmentRequest]:
    return [ReassignmentRequest(t.name, int(p.partition_index),
                                None if p.replicas is None else tuple(int(b) for b in p.replicas))
            for t in request.topics for p in t.partitions]


def _single_node(image, node_id: int, requests: list[ReassignmentRequest]) -> list[ReassignmentResult]:
    """One node: every partition's one replica is this broker, the only registered one."""
    results = []
    for r in requests:
        topic = image.topics_by_name.get(r.topic)
        if topic is None or r.partition not in topic.partitions:
            results.append(ReassignmentResult(r.topic, r.partition, ErrorCode.unknown_topic_or_partition,
                                              "The partition does not exist."))
        elif r.target_replicas is None:
            results.append(ReassignmentResult(r.topic, r.partition, ErrorCode.no_reassignment_in_progress,
                                              "No ongoing reassignment for this partition."))
        elif (message := invalid_target(r.target_replicas, (node_id,))) is not None:
            results.append(ReassignmentResult(r.topic, r.partition, ErrorCode.invalid_replica_assignment, message))
        else:
            results.append(ReassignmentResult(r.topic, r.partition, ErrorCode.none))
    return results


def _answer(ctx, error: ErrorCode, message: str | None, results: list[ReassignmentResult]):
    by_topic: dict[str, list] = {}
    for r in results:
        by_topic.setdefault(r.topic, []).append(ctx.entity(
            "ReassignablePartitionResponse", partition_index=r.partition, error_code=r.error,
            error_message=r.message))
    return ctx.response(
        throttle_time=timedelta(0), error_code=error, error_message=message,
        responses=tuple(ctx.entity("ReassignableTopicResponse", name=name, partitions=tuple(partitions))
                        for name, partitions in by_topic.items()))


async def handle(request, ctx):
    requests = _requests(request)
    if len(requests) > MAX_PARTITIONS:
        return _answer(ctx, ErrorCode.invalid_request, f"more than {MAX_PARTITIONS} partitions", [])
    allow_rf_change = bool(getattr(request, "allow_replication_factor_change", True))
    cluster = ctx.broker.cluster
    if cluster is None:
        return _answer(ctx, ErrorCode.none, None,
                       _single_node(ctx.broker.image, ctx.broker.node_id, requests))
    controller = cluster.controller
    if controller is None or not controller.active:
        return _answer(ctx, ErrorCode.not_controller, "This broker is not the controller.", [])
    try:
        results = await controller.alter_partition_reassignments(requests, allow_rf_change)
    except MetadataQuorumError as exc:
        return _answer(ctx, exc.error_code, str(exc), [])
    return _answer(ctx, ErrorCode.none, None, results)
