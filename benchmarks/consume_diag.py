"""Why the consume figure is what it is: fetch round trips, response sizes and client cost.

    /tmp/venv/bin/python -m benchmarks.consume_diag --peer tansu --repeat 2
    /tmp/venv/bin/python -m benchmarks.consume_diag --server 127.0.0.1:9092 --fill-mib 128
    /tmp/venv/bin/python -m benchmarks.consume_diag --peer tansu --client max.partition.fetch.bytes=1048576

Runs the benchmark's consume scenario (`workload.consume`: 1 KiB records, 4 partitions, filled
with acks=1 by `workload.produce`, read from the beginning with the same client settings) with
librdkafka's statistics switched on, and prints per server, per GB of payload:
- Fetch requests sent and their mean response size (librdkafka's `brokers[].req.Fetch`,
  `rxbytes`), and the bytes received per payload byte (framing, batch headers and any partial
  trailing batch the client drops: `rxpartial` counts those);
- the client's CPU split into user and system time, minor page faults and context switches
  (getrusage of this process, librdkafka's threads included);
- the broker's CPU (from /proc, as the benchmark does).
The timed read runs without statistics (its CPU figures are the benchmark's); the counters
come from a second, untimed read of the same topic. With `--profile DIR`, `perf record -g` of
the client and py-spy of the broker during the timed read. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import procstat, workload
from benchmarks.profile import PySpy
from benchmarks.servers import Server, make_server

STATS_INTERVAL_MS = 100
PERF_SAMPLE_RATE_HZ = 999
RECORD_BYTES = 1024
PARTITIONS = 4


def _broker_totals(stats: dict) -> dict:
    totals = {"fetch_requests": 0, "rx": 0, "rxbytes": 0, "rxpartial": 0, "rxidle_us": 0}
    for broker in stats.get("brokers", {}).values():
        if broker.get("nodeid", -1) < 0:
            continue  # the bootstrap connection, closed after Metadata
        totals["fetch_requests"] += broker.get("req", {}).get("Fetch", 0)
        totals["rx"] += broker.get("rx", 0)
        totals["rxbytes"] += broker.get("rxbytes", 0)
        totals["rxpartial"] += broker.get("rxpartial", 0)
    return totals


class _PerfRecord:
    """`perf record -g` of this process (the client: Python and librdkafka's threads)."""

    def __init__(self, out_path: Path | None) -> None:
        self.out_path, self.process = out_path, None

    def __enter__(self):
        if self.out_path is not None and shutil.which("perf"):
            self.process = subprocess.Popen(
                ["perf", "record", "-F", str(PERF_SAMPLE_RATE_HZ), "-g", "-p", str(os.getpid()),
                 "-o", str(self.out_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf attaches
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)


def measure(server: Server, fill_bytes: int, client_overrides: dict | None = None,
            profile_dir: Path | None = None, cold: bool = False) -> dict:
    topic = f"diag-consume-{time.monotonic_ns()}"
    workload.create_topic(server.bootstrap, topic, PARTITIONS)
    filled = workload.produce(server.bootstrap, topic, partitions=PARTITIONS, record_bytes=RECORD_BYTES,
                              acks="1", compression="none", duration_s=120, max_bytes=fill_bytes)
    latest: list[dict] = []

    def on_stats(raw: str) -> None:
        latest.append(json.loads(raw))
        del latest[:-1]

    def flush_stats(consumer) -> None:
        # One more statistics interval so that the last emitted figures cover the whole read.
        deadline = time.perf_counter() + 3 * STATS_INTERVAL_MS / 1000
        while time.perf_counter() < deadline:
            consumer.poll(STATS_INTERVAL_MS / 1000)

    cpu0 = procstat.sample(server.pid)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    tag = f"{server.name}-{time.monotonic_ns()}"
    with contextlib.ExitStack() as stack:
        if profile_dir is not None:
            stack.enter_context(_PerfRecord(profile_dir / f"client-{tag}.perf"))
            if server.pid:
                stack.enter_context(PySpy(server.pid, profile_dir / f"broker-{tag}.txt"))
        t = workload.consume(server.bootstrap, topic, partitions=PARTITIONS, expected_records=filled.records,
                             record_bytes=RECORD_BYTES, extra_config=client_overrides, cold=cold)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1 = procstat.sample(server.pid)
    # The counters: a second, untimed read of the same topic with a final statistics flush.
    workload.consume(server.bootstrap, topic, partitions=PARTITIONS, expected_records=filled.records,
                     record_bytes=RECORD_BYTES,
                     extra_config=(client_overrides or {})
                     | {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": on_stats},
                     before_close=flush_stats)
    workload.delete_topic(server.bootstrap, topic)
    gb = t.payload_bytes / 1e9
    totals = _broker_totals(latest[-1]) if latest else {}
    fetches = totals.get("fetch_requests", 0)
    return {
        "server": server.name + (" (cold)" if cold else ""),
        "records": t.records,
        "MB/s": t.mb_per_s,
        "elapsed s": t.elapsed_s,
        "first records s": t.first_records_s,
        "untimed lookup s": t.client_ready_s,
        "MB/s after the first records": (t.payload_bytes / (t.elapsed_s - t.first_records_s) / 1e6
                                         if t.first_records_s is not None and t.elapsed_s > t.first_records_s
                                         else None),
        "client user CPU-s/GB": (r1.ru_utime - r0.ru_utime) / gb,
        "client sys CPU-s/GB": (r1.ru_stime - r0.ru_stime) / gb,
        "client minor faults/GB": (r1.ru_minflt - r0.ru_minflt) / gb,
        "client ctx switches/GB": (r1.ru_nvcsw - r0.ru_nvcsw + r1.ru_nivcsw - r0.ru_nivcsw) / gb,
        "broker CPU-s/GB": (cpu1.cpu_s - cpu0.cpu_s) / gb if cpu0 and cpu1 else None,
        "fetch requests/GB": fetches / gb,
        "mean Fetch response KiB": totals["rxbytes"] / max(totals["rx"], 1) / 1024 if totals else None,
        "received bytes / payload byte": totals["rxbytes"] / t.payload_bytes if totals else None,
        "partial batches dropped/GB": totals.get("rxpartial", 0) / gb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="odradek")
    parser.add_argument("--peer", default=None)
    parser.add_argument("--fill-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--client", action="append", default=[], metavar="KEY=VALUE",
                        help="override a consumer setting of the benchmark (diagnostic), e.g. "
                             "max.partition.fetch.bytes=1048576")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="perf record the client and py-spy the broker during the timed read "
                             "(then its CPU figures include the profilers' cost)")
    parser.add_argument("--cold", action="store_true",
                        help="also time each read the way the runs before 2026-11-25 (third session) "
                             "did: from assign() of a client that does not know the leaders yet")
    args = parser.parse_args(argv)
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(item.split("=", 1) for item in args.client)
    kinds = [args.server] + ([args.peer] if args.peer else [])
    work_dir = Path(tempfile.mkdtemp(prefix="odradek-consume-diag-"))
    servers = [make_server(kind, work_dir / kind.replace(":", "_")) for kind in kinds]
    print(f"load before {os.getloadavg()}", flush=True)
    try:
        for server in servers:
            server.start()
        for rep in range(args.repeat):
            for server in servers if rep % 2 == 0 else servers[::-1]:
                for cold in (False, True) if args.cold else (False,):
                    row = measure(server, args.fill_mib << 20, overrides, profile_dir, cold=cold)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
    finally:
        for server in servers:
            server.stop()
    print(f"load after {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
