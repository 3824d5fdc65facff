"""DescribeLogDirs (API key 35), versions 1-4.

Per data directory: its path, the partitions in it with their size in bytes (segment files) and
offset lag 0 (no future replicas), and (v4) the file system's total and usable bytes.
A null `topics` asks for every partition; named partitions this broker does not host are left
out, as in Kafka. Errors: none per directory (KAFKA_STORAGE_ERROR would mark an offline dir).
"""

from __future__ import annotations

import os
from datetime import timedelta

from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    manager = ctx.broker.log_manager
    wanted = None if request.topics is None else {
        (t.topic, p) for t in request.topics for p in t.partitions}
    by_dir: dict[str, dict[str, list]] = {d: {} for d in manager.log_dirs()}
    for the_log in manager.logs():
        if wanted is not None and (the_log.topic, the_log.partition) not in wanted:
            continue
        log_dir = manager.log_dir_of(the_log)
        if log_dir is None or the_log.closed:
            continue
        by_dir[log_dir].setdefault(the_log.topic, []).append(ctx.entity(
            "DescribeLogDirsPartition", partition_index=the_log.partition, partition_size=the_log.size_bytes(),
            offset_lag=0, is_future_key=False))
    results = []
    for log_dir, topics in by_dir.items():
        try:
            stat = os.statvfs(log_dir)
            total_bytes, usable_bytes = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
        except OSError:
            total_bytes = usable_bytes = -1
        results.append(ctx.entity(
            "DescribeLogDirsResult", error_code=ErrorCode.none, log_dir=log_dir, total_bytes=total_bytes,
            usable_bytes=usable_bytes, topics=tuple(
                ctx.entity("DescribeLogDirsTopic", name=name, partitions=tuple(partitions))
                for name, partitions in sorted(topics.items()))))
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.none, results=tuple(results))
