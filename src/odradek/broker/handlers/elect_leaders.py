"""ElectLeaders (API key 43), versions 0-2.

Asks the controller for leader elections: PREFERRED (v0's only kind, election type 0) makes each
partition's first replica its leader when it is a live ISR member; UNCLEAN (1, v1+) elects a
leader for a leaderless partition, from the ISR if possible, else from any live replica.
`topic_partitions` null means every partition, and then only partitions where an election was
attempted are reported (Kafka's rule). The answer comes once the elections are written to the
metadata quorum (the request's timeout is not used: the write is bounded on its own).
Single node: the broker leads every partition, so ELECTION_NOT_NEEDED (UNKNOWN_TOPIC_OR_PARTITION
for a partition that does not exist). Cluster mode on a broker that is not the controller:
NOT_CONTROLLER (top level in v1+, per partition in v0), so the admin client retries at the
controller that Metadata names.
Per partition: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST (unknown type).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.metadata.election import ElectionResult
from odradek.metadata.etcd_store import MetadataQuorumError
from odradek.protocol.errors import ErrorCode

ELECTION_PREFERRED = 0


def _requested(request) -> list[tuple[str, int]] | None:
    if request.topic_partitions is None:
        return None
    return [(t.topic, int(index)) for t in request.topic_partitions for index in t.partitions]


def _single_node(image, requested: list[tuple[str, int]] | None) -> list[ElectionResult]:
    if requested is None:
        return []  # nothing needs an election
    results = []
    for name, index in requested:
        topic = image.topics_by_name.get(name)
        if topic is None or index not in topic.partitions:
            results.append(ElectionResult(name, index, ErrorCode.unknown_topic_or_partition,
                                          "The partition does not exist."))
        else:
            results.append(ElectionResult(name, index, ErrorCode.election_not_needed,
                                          "Leader election not needed for topic partition."))
    return results


def _answer(ctx, error: ErrorCode, results: list[ElectionResult]):
    by_topic: dict[str, list] = {}
    for r in results:
        by_topic.setdefault(r.topic, []).append(ctx.entity(
            "PartitionResult", partition_id=r.partition, error_code=r.error, error_message=r.message))
    return ctx.response(
        throttle_time=timedelta(0), error_code=error,
        replica_election_results=tuple(
            ctx.entity("ReplicaElectionResult", topic=topic, partition_result=tuple(partitions))
            for topic, partitions in by_topic.items()))


async def handle(request, ctx):
    requested = _requested(request)
    election_type = getattr(request, "election_type", ELECTION_PREFERRED)
    cluster = ctx.broker.cluster
    if cluster is None:
        return _answer(ctx, ErrorCode.none, _single_node(ctx.broker.image, requested))
    controller = cluster.controller
    error = ErrorCode.not_controller
    if controller is not None and controller.active:
        try:
            return _answer(ctx, ErrorCode.none, await controller.elect_leaders(requested, election_type))
        except MetadataQuorumError as exc:
            error = exc.error_code
    if ctx.api_version >= 1:
        return _answer(ctx, error, [])
    return _answer(ctx, ErrorCode.none, [ElectionResult(name, index, error) for name, index in requested or ()])
