"""Issue #6: many partitions on one broker: creation, restart, RSS and open file descriptors.

    /tmp/venv/bin/python -m benchmarks.scale_partitions --partitions 10000 --topics 100
    /tmp/venv/bin/python -m benchmarks.scale_partitions --partitions 2000 --produce --profile /tmp/prof

Steps against an Odradek subprocess (`python -m odradek serve`, data on disk under --work-dir):
1. start (fresh data dir), create `--topics` topics holding `--partitions` together
   (CreateTopics, `--batch` topics per request), then Metadata for all;
2. with `--produce`, one small record to every partition (each active segment then has data,
   which is what a restart must read back);
3. SIGTERM (clean stop), start again: start-up to the first served ApiVersions, Metadata for all,
   and (with `--produce`) one more record to every partition after the restart;
4. RSS and open fds of the broker after each step.

With `--profile DIR`, py-spy records the broker during creation and during the restart (collapsed
stacks `create.txt`, `after_restart.txt`). Prints one line per figure and asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import procstat
from benchmarks.servers import OdradekServer

ADMIN_TIMEOUT_S = 300.0
PRODUCE_TIMEOUT_S = 300.0
PY_SPY = str(Path(sys.executable).with_name("py-spy"))


def _sample(server: OdradekServer, figures: dict, label: str) -> None:
    s = procstat.sample(server.pid)
    if s is not None:
        figures[f"{label}_rss_mb"] = round(s.rss_bytes / 1e6, 1)
        figures[f"{label}_fds"] = s.open_fds


def _profile(pid: int | None, out: Path | None, name: str) -> subprocess.Popen | None:
    if out is None or pid is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    # Collapsed stacks (one `frame;frame;... count` line each) are easy to grep and sum.
    return subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "-o", str(out / f"{name}.txt"),
                             "--format", "raw", "--rate", "200", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profile(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.send_signal(2)  # SIGINT: py-spy writes its flame graph and exits
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _metadata_partitions(bootstrap: str, names: list[str]) -> tuple[int, float]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.perf_counter()
    md = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    ms = (time.perf_counter() - started) * 1000
    return sum(len(md.topics[n].partitions) for n in names if n in md.topics), round(ms, 1)


def _produce_everywhere(bootstrap: str, names: list[str], per_topic: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": 1, "log_level": 2})
    started = time.perf_counter()
    for name in names:
        for partition in range(per_topic):
            while True:
                try:
                    producer.produce(name, b"x" * 100, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(PRODUCE_TIMEOUT_S)
    if left:
        raise RuntimeError(f"{left} records not acknowledged")
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    work_dir = Path(args.work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    per_topic = args.partitions // args.topics
    names = [f"scale-{i:04d}" for i in range(args.topics)]
    profile_dir = Path(args.profile) if args.profile else None
    server = OdradekServer(work_dir, overrides=dict(o.split("=", 1) for o in args.override))
    figures: dict = {"partitions_asked": per_topic * args.topics}
    server.start()
    figures["fresh_startup_ms"] = round(server.startup_ms, 1)
    try:
        admin = AdminClient({"bootstrap.servers": server.bootstrap})
        spy = _profile(server.pid, profile_dir, "create")
        started = time.perf_counter()
        try:
            for i in range(0, len(names), args.batch):
                batch = [NewTopic(n, per_topic, 1) for n in names[i: i + args.batch]]
                for future in admin.create_topics(batch, operation_timeout=ADMIN_TIMEOUT_S,
                                                  request_timeout=ADMIN_TIMEOUT_S).values():
                    future.result(ADMIN_TIMEOUT_S)
        except (KafkaException, TimeoutError) as exc:
            figures["error"] = f"CreateTopics failed: {exc}"
        figures["create_s"] = round(time.perf_counter() - started, 2)
        figures["partitions"], figures["metadata_ms"] = _metadata_partitions(server.bootstrap, names)
        _sample(server, figures, "after_create")
        if args.produce and "error" not in figures:
            figures["produce_all_s"] = round(_produce_everywhere(server.bootstrap, names, per_topic), 2)
            _sample(server, figures, "after_produce")
        _stop_profile(spy)
        started = time.perf_counter()
        server.stop()
        figures["clean_stop_s"] = round(time.perf_counter() - started, 2)
        try:
            server.start()
        except RuntimeError as exc:
            tail = (work_dir / "odradek.log").read_text().strip().splitlines()[-3:]
            figures["error"] = f"restart failed: {exc}: {tail}"
            return figures
        figures["restart_startup_ms"] = round(server.startup_ms, 1)
        spy = _profile(server.pid, profile_dir, "after_restart")
        figures["restart_partitions"], figures["restart_metadata_ms"] = _metadata_partitions(server.bootstrap, names)
        _sample(server, figures, "after_restart")
        if args.produce:
            figures["restart_produce_all_s"] = round(_produce_everywhere(server.bootstrap, names, per_topic), 2)
            _sample(server, figures, "after_restart_produce")
        _stop_profile(spy)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=10_000, help="total partitions (default 10000)")
    parser.add_argument("--topics", type=int, default=100, help="topics sharing them (default 100)")
    parser.add_argument("--batch", type=int, default=10, help="topics per CreateTopics request")
    parser.add_argument("--produce", action="store_true", help="one record to every partition, before and after the restart")
    parser.add_argument("--work-dir", default="/tmp/odradek-scale-partitions")
    parser.add_argument("--override", action="append", default=[], help="broker config key=value")
    parser.add_argument("--profile", help="directory for py-spy flame graphs")
    parser.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    args = parser.parse_args(argv)
    figures = run(args)
    for key, value in figures.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
