"""Run the benchmark scenarios against Odradek and, optionally, a peer; print a table and JSON.

    python -m benchmarks.run --peer tansu --quick
    python -m benchmarks.run --server 127.0.0.1:9092 --only produce       # any running server

Both servers run for the whole throughput part; each repetition alternates the order (A, B then
B, A) so slow drifts of a shared machine land on both. Figures are medians over repetitions; the
ratio column is server / peer, and the `better` column says which direction is good.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import latency, procstat, scale, workload
from benchmarks.profile import PySpy, top_self_time
from benchmarks.servers import OdradekServer, Server, make_server

# (record_bytes, partitions, acks, compression)
FULL_PRODUCE_MATRIX = [
    (size, parts, acks, codec)
    for size in (100, 1024, 16384)
    for parts in (1, 4, 16)
    for acks in ("1", "all")
    for codec in ("none", "lz4")
]
QUICK_PRODUCE_MATRIX = [
    (1024, 4, "all", "none"),
    (100, 4, "all", "none"),
    (16384, 4, "all", "none"),
    (1024, 4, "all", "lz4"),
    (1024, 1, "1", "none"),
    (1024, 16, "all", "none"),
]
HEADLINE = (1024, 4, "all", "none")


@dataclass
class Settings:
    produce_matrix: list
    produce_duration_s: float
    produce_max_bytes: int
    consume_fill_bytes: int
    latency_rates_mb_s: tuple
    latency_duration_s: float
    repeat: int
    startup_repeat: int
    partitions_total: int
    partitions_topics: int
    idle_connections: int
    group_members: int


QUICK = Settings(
    QUICK_PRODUCE_MATRIX, 2.0, 512 << 20, 256 << 20, (20.0,), 3.0, 2, 3, 10_000, 10, 1_000, 50
)
FULL = Settings(
    FULL_PRODUCE_MATRIX, 4.0, 1 << 30, 512 << 20, (5.0, 20.0), 8.0, 3, 5, 10_000, 10, 1_000, 50
)


@dataclass
class Row:
    """One figure for every server, one value per repetition."""

    section: str
    name: str
    unit: str
    better: str  # "higher" | "lower"
    values: dict = field(default_factory=dict)  # server name -> [values]
    target: str = ""

    def add(self, server: str, value) -> None:
        self.values.setdefault(server, []).append(value)

    def median(self, server: str):
        numbers = [v for v in self.values.get(server, []) if isinstance(v, (int, float))]
        if numbers:
            return statistics.median(numbers)
        texts = self.values.get(server)
        return texts[0] if texts else None


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.notes: list[str] = []
        self.profiles: dict[str, list] = {}

    def add(
        self, section: str, name: str, unit: str, better: str, server: str, value, target: str = ""
    ) -> None:
        key = (section, name)
        if key not in self.rows:
            self.rows[key] = Row(section, name, unit, better, target=target)
        self.rows[key].add(server, value)


def cpu_self_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def topic_name(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def warm_up(servers: list[Server]) -> None:
    """One short produce and consume per server, discarded: first-use imports, page cache."""
    for server in servers:
        topic = topic_name("bench-warmup")
        workload.create_topic(server.bootstrap, topic, 4)
        t = workload.produce(
            server.bootstrap,
            topic,
            partitions=4,
            record_bytes=1024,
            acks="all",
            compression="none",
            duration_s=1.0,
        )
        workload.consume(
            server.bootstrap, topic, partitions=4, expected_records=t.records, record_bytes=1024
        )
        workload.delete_topic(server.bootstrap, topic)


def run_produce(servers: list[Server], s: Settings, results: Results) -> None:
    for size, parts, acks, codec in s.produce_matrix:
        label = f"{size} B, {parts} p, acks={acks}, {codec}"
        for rep in range(s.repeat):
            for server in servers if rep % 2 == 0 else servers[::-1]:
                topic = topic_name("bench-produce")
                workload.create_topic(server.bootstrap, topic, parts)
                cpu0, client0 = procstat.sample(server.pid), cpu_self_s()
                t = workload.produce(
                    server.bootstrap,
                    topic,
                    partitions=parts,
                    record_bytes=size,
                    acks=acks,
                    compression=codec,
                    duration_s=s.produce_duration_s,
                    max_bytes=s.produce_max_bytes,
                )
                cpu1, client1 = procstat.sample(server.pid), cpu_self_s()
                workload.delete_topic(server.bootstrap, topic)
                target = ""
                if (size, parts, acks, codec) == HEADLINE:
                    target = ">= 1.2x peer" + (" (on disk)" if server.on_disk else "")
                elif (size, parts, acks, codec) == (100, 4, "all", "none"):
                    target = ">= 1.0x peer"
                results.add(
                    "produce",
                    f"{label}: records/s",
                    "rec/s",
                    "higher",
                    server.name,
                    t.records_per_s,
                    target,
                )
                results.add("produce", f"{label}: MB/s", "MB/s", "higher", server.name, t.mb_per_s)
                gb = t.payload_bytes / 1e9
                if cpu0 and gb:
                    results.add(
                        "cost",
                        f"produce {label}: broker CPU",
                        "CPU-s/GB",
                        "lower",
                        server.name,
                        (cpu1.cpu_s - cpu0.cpu_s) / gb,
                        "<= peer" if (size, parts, acks, codec) == HEADLINE else "",
                    )
                    results.add(
                        "cost",
                        f"produce {label}: client CPU",
                        "CPU-s/GB",
                        "lower",
                        server.name,
                        (client1 - client0) / gb,
                    )
                if t.log_end_offsets != t.records:
                    results.notes.append(
                        f"{server.name} produce {label}: client counted "
                        f"{t.records} acknowledged records, ListOffsets(latest) "
                        f"summed to {t.log_end_offsets}"
                    )
                if t.errors:
                    results.notes.append(
                        f"{server.name} produce {label}: {t.errors} delivery errors"
                    )
                print(
                    f"  produce {label} on {server.name}: {t.records_per_s:,.0f} rec/s "
                    f"{t.mb_per_s:.1f} MB/s",
                    flush=True,
                )
    for server in servers:
        after = procstat.sample(server.pid)
        if after:
            results.add(
                "cost",
                "after produce runs: broker RSS",
                "MB",
                "lower",
                server.name,
                after.rss_bytes / 1e6,
            )
            results.add(
                "cost",
                "after produce runs: broker open fds",
                "fds",
                "lower",
                server.name,
                after.open_fds,
            )


def run_consume(
    servers: list[Server], s: Settings, results: Results, profile_dir: Path | None
) -> None:
    size, parts = 1024, 4
    label = f"{size} B, {parts} p, from beginning of {s.consume_fill_bytes >> 20} MiB"
    for rep in range(s.repeat):
        for server in servers if rep % 2 == 0 else servers[::-1]:
            topic = topic_name("bench-consume")
            workload.create_topic(server.bootstrap, topic, parts)
            filled = workload.produce(
                server.bootstrap,
                topic,
                partitions=parts,
                record_bytes=size,
                acks="1",
                compression="none",
                duration_s=120,
                max_bytes=s.consume_fill_bytes,
            )
            cpu0, client0 = procstat.sample(server.pid), cpu_self_s()
            t = workload.consume(
                server.bootstrap,
                topic,
                partitions=parts,
                expected_records=filled.records,
                record_bytes=size,
            )
            cpu1, client1 = procstat.sample(server.pid), cpu_self_s()
            results.add(
                "consume",
                f"{label}: records/s",
                "rec/s",
                "higher",
                server.name,
                t.records_per_s,
                ">= 1.5x peer",
            )
            results.add("consume", f"{label}: MB/s", "MB/s", "higher", server.name, t.mb_per_s)
            if t.first_records_s is not None:
                results.add("consume", f"{label}: assign to first records", "ms", "lower", server.name,
                            t.first_records_s * 1000)
            if t.client_ready_s is not None:
                results.add("consume", f"{label}: untimed client lookup before assign", "ms", "lower",
                            server.name, t.client_ready_s * 1000)
            gb = t.payload_bytes / 1e9
            if cpu0 and gb:
                results.add(
                    "cost",
                    f"consume {label}: broker CPU",
                    "CPU-s/GB",
                    "lower",
                    server.name,
                    (cpu1.cpu_s - cpu0.cpu_s) / gb,
                    "<= peer",
                )
                results.add(
                    "cost",
                    f"consume {label}: client CPU",
                    "CPU-s/GB",
                    "lower",
                    server.name,
                    (client1 - client0) / gb,
                )
            if t.records != filled.records:
                results.notes.append(
                    f"{server.name} consume: read {t.records} records, the log "
                    f"end offsets said {filled.records}"
                )
            print(
                f"  consume on {server.name}: {t.records_per_s:,.0f} rec/s {t.mb_per_s:.1f} MB/s",
                flush=True,
            )
            if profile_dir and rep == 0 and server.name == "odradek":
                with PySpy(server.pid, profile_dir / "consume.txt"):
                    workload.consume(
                        server.bootstrap,
                        topic,
                        partitions=parts,
                        expected_records=filled.records,
                        record_bytes=size,
                    )
                results.profiles["consume"] = top_self_time(profile_dir / "consume.txt")
            workload.delete_topic(server.bootstrap, topic)


def run_profile_produce(
    servers: list[Server], s: Settings, results: Results, profile_dir: Path
) -> None:
    size, parts, acks, codec = HEADLINE
    for server in servers:
        if server.name != "odradek":
            continue
        topic = topic_name("bench-profile")
        workload.create_topic(server.bootstrap, topic, parts)
        with PySpy(server.pid, profile_dir / "produce.txt"):
            workload.produce(
                server.bootstrap,
                topic,
                partitions=parts,
                record_bytes=size,
                acks=acks,
                compression=codec,
                duration_s=max(s.produce_duration_s, 4.0),
                max_bytes=s.produce_max_bytes,
            )
        workload.delete_topic(server.bootstrap, topic)
        results.profiles["produce"] = top_self_time(profile_dir / "produce.txt")


def run_latency(servers: list[Server], s: Settings, results: Results) -> None:
    for rate in s.latency_rates_mb_s:
        label = f"1024 B at {rate:g} MB/s, 4 p, acks=all"
        for rep in range(s.repeat):
            for server in servers if rep % 2 == 0 else servers[::-1]:
                topic = topic_name("bench-latency")
                workload.create_topic(server.bootstrap, topic, 4)
                lat = latency.measure(
                    server.bootstrap,
                    topic,
                    partitions=4,
                    rate_mb_s=rate,
                    record_bytes=1024,
                    duration_s=s.latency_duration_s,
                )
                workload.delete_topic(server.bootstrap, topic)
                for q in ("p50_ms", "p99_ms", "p999_ms"):
                    results.add(
                        "latency",
                        f"{label}: {q[:-3]}",
                        "ms",
                        "lower",
                        server.name,
                        getattr(lat, q),
                        "< 5 ms" if q == "p99_ms" and rate == 20.0 else "",
                    )
                results.add(
                    "latency",
                    f"{label}: achieved",
                    "MB/s",
                    "higher",
                    server.name,
                    lat.achieved_mb_s,
                )
                if lat.lost:
                    results.notes.append(
                        f"{server.name} latency {label}: {lat.lost} records "
                        "not consumed before the deadline"
                    )
                print(
                    f"  latency {label} on {server.name}: p50 {lat.p50_ms:.2f} "
                    f"p99 {lat.p99_ms:.2f} p99.9 {lat.p999_ms:.2f} ms",
                    flush=True,
                )


def run_scale(kinds: list[str], work_dir: Path, s: Settings, results: Results) -> None:
    for rep in range(s.startup_repeat):
        for kind in kinds if rep % 2 == 0 else kinds[::-1]:
            server = make_server(kind, work_dir / f"startup-{rep}")
            f = scale.startup(server)
            results.add(
                "scale",
                "startup to first served request",
                "ms",
                "lower",
                server.name,
                f["startup_ms"],
                "< 300 ms",
            )
            results.add(
                "scale", "idle RSS", "MB", "lower", server.name, f["idle_rss_mb"], "< 50 MB"
            )
            results.add("scale", "idle open fds", "fds", "lower", server.name, f["idle_fds"])
    for kind in kinds:
        server = make_server(kind, work_dir / "partitions").start()
        try:
            print(f"  {s.partitions_total} partitions on {server.name} ...", flush=True)
            f = scale.many_partitions(server, s.partitions_total, s.partitions_topics)
        finally:
            server.stop()
        n = f"{s.partitions_total:,} partitions"
        results.add(
            "scale",
            f"{n}: create ({s.partitions_topics} topics)",
            "s",
            "lower",
            server.name,
            f["create_s"],
        )
        results.add(
            "scale", f"{n}: Metadata for all", "ms", "lower", server.name, f["metadata_all_ms"]
        )
        results.add(
            "scale",
            f"{n}: RSS after create",
            "MB",
            "lower",
            server.name,
            f["rss_mb_after_create"],
            "< 500 MB",
        )
        missing = "failed (see notes)" if server.on_disk else "n/a (memory only)"
        results.add(
            "scale",
            f"{n}: restart to first served request",
            "ms",
            "lower",
            server.name,
            f["restart_startup_ms"] if f["restart_startup_ms"] is not None else missing,
            "< 5000 ms",
        )
        results.add(
            "scale",
            f"{n}: RSS after restart",
            "MB",
            "lower",
            server.name,
            f["restart_rss_mb"] if f["restart_rss_mb"] is not None else missing,
            "< 500 MB",
        )
        if f.get("clean_stop_s") is not None:
            results.add(
                "scale",
                f"{n}: clean stop (SIGTERM to exit)",
                "s",
                "lower",
                server.name,
                f["clean_stop_s"],
            )
        if f["error"]:
            results.notes.append(f"{server.name} {n}: {f['error']}")
        if f["partitions"] != s.partitions_total:
            results.notes.append(
                f"{server.name}: Metadata showed {f['partitions']} of "
                f"{s.partitions_total} partitions"
            )
    for kind in kinds:
        server = make_server(kind, work_dir / "connections").start()
        try:
            f = scale.idle_connections(server, s.idle_connections)
        finally:
            server.stop()
        n = f"{s.idle_connections:,} idle connections"
        results.add("scale", f"{n}: RSS", "MB", "lower", server.name, f.get("rss_mb"))
        results.add(
            "scale",
            f"{n}: RSS per connection",
            "kB",
            "lower",
            server.name,
            f.get("rss_kb_per_connection"),
        )
        results.add(
            "scale",
            f"{n}: new connection's ApiVersions",
            "ms",
            "lower",
            server.name,
            f["new_connection_probe_ms"],
        )
    for kind in kinds:
        server = make_server(kind, work_dir / "group").start()
        try:
            print(f"  consumer group of {s.group_members} on {server.name} ...", flush=True)
            f = scale.consumer_group(server, s.group_members, "bench-group", s.group_members)
        finally:
            server.stop()
        n = f"group of {s.group_members} members"
        if "skipped" in f:
            print(f"  SKIPPED {n} on {server.name}: {f['skipped']}", flush=True)
            results.add(
                "scale", f"{n}: all assigned", "s", "lower", server.name, f"skipped: {f['skipped']}"
            )
            continue
        results.add("scale", f"{n}: all assigned", "s", "lower", server.name, f["all_assigned_s"])
        results.add("scale", f"{n}: RSS", "MB", "lower", server.name, f.get("rss_mb"))


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(results: Results, names: list[str]) -> str:
    a = names[0]
    b = names[1] if len(names) > 1 else None
    header = (
        ["section", "figure", "unit", a] + ([b, f"{a}/{b}", "better"] if b else []) + ["target"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results.rows.values():
        va = row.median(a)
        cells = [row.section, row.name, row.unit, fmt(va)]
        if b:
            vb = row.median(b)
            ratio = (
                f"{va / vb:.2f}x"
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb
                else "-"
            )
            cells += [fmt(vb), ratio, row.better]
        cells.append(row.target)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--server", default="odradek", help="odradek (default), tansu, or host:port")
    p.add_argument(
        "--peer", default=None, help="a second server to compare: tansu, odradek, host:port"
    )
    p.add_argument("--quick", action="store_true", help="a subset that finishes in a few minutes")
    p.add_argument(
        "--only",
        default="produce,consume,latency,scale",
        help="comma-separated sections: produce, consume, latency, scale",
    )
    p.add_argument("--repeat", type=int, default=None, help="repetitions per figure (median)")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="py-spy the Odradek broker during produce and consume; stacks into DIR",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="write all figures as JSON")
    p.add_argument("--work-dir", default=None, help="data dirs and logs (default: a temp dir)")
    p.add_argument(
        "--odradek-log-dirs",
        default=None,
        metavar="DIR",
        help="Odradek's log.dirs for the throughput sections (e.g. a tmpfs, to tell "
        "disk writeback from broker cost); default: under the work dir",
    )
    args = p.parse_args(argv)

    settings = QUICK if args.quick else FULL
    if args.repeat:
        settings.repeat = args.repeat
    sections = set(args.only.split(","))
    kinds = [args.server] + ([args.peer] if args.peer else [])
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="odradek-bench-"))
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    results = Results()
    started = time.perf_counter()
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    print(f"work dir {work_dir}; servers {kinds}; {'quick' if args.quick else 'full'}", flush=True)

    if sections & {"produce", "consume", "latency"}:
        servers = [make_server(kind, work_dir / "throughput") for kind in kinds]
        for server in servers:
            if args.odradek_log_dirs and isinstance(server, OdradekServer):
                server.log_dirs = Path(args.odradek_log_dirs)
        try:
            for server in servers:
                server.start()
            warm_up(servers)
            if "produce" in sections:
                run_produce(servers, settings, results)
                if profile_dir:
                    run_profile_produce(servers, settings, results, profile_dir)
            if "consume" in sections:
                run_consume(servers, settings, results, profile_dir)
            if "latency" in sections:
                run_latency(servers, settings, results)
        finally:
            for server in servers:
                server.stop()
    names = [make_server(kind, work_dir).name for kind in kinds]
    if "scale" in sections:
        run_scale(kinds, work_dir / "scale", settings, results)

    print()
    print(table(results, names))
    for note in results.notes:
        print(f"note: {note}")
    for what, top in results.profiles.items():
        print(f"\nodradek broker, top self time during {what} (share of busy samples):")
        for leaf, share in top:
            print(f"  {share:6.1%}  {leaf}")
    load_after = os.getloadavg()
    print(
        f"\n{time.perf_counter() - started:.0f} s in all; load average (1, 5, 15 min) "
        f"before {load_before}, after {tuple(round(x, 2) for x in load_after)}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "servers": names,
                    "settings": asdict(settings),
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                    "rows": [asdict(r) for r in results.rows.values()],
                    "medians": {
                        f"{r.section}: {r.name}": {n: r.median(n) for n in names}
                        for r in results.rows.values()
                    },
                    "notes": results.notes,
                    "profiles": results.profiles,
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
