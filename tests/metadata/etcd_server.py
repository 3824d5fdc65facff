"""A real etcd server in a subprocess for tests: temp data dir, free loopback ports, restartable.

Short heartbeat and election timeouts bring etcd's minimum lease TTL down to 1 s (etcd's minimum
is ceil(1.5 x election timeout)), so lease expiry tests take about a second.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ETCD_BINARY = shutil.which("etcd")
HEARTBEAT_MS = 25
ELECTION_MS = 250


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """One single-member etcd; `stop()` / `start()` keep its data dir and ports (a restart)."""

    def __init__(self) -> None:
        assert ETCD_BINARY is not None
        self.data_dir = tempfile.mkdtemp(prefix="odradek-etcd-")
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.client_port)

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self, timeout_s: float = 10.0) -> None:
        client_url = f"http://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [ETCD_BINARY, "--name", "odradek-test", "--data-dir", os.path.join(self.data_dir, "data"),
                 "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                 "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                 "--initial-cluster", f"odradek-test={peer_url}",
                 "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
                 "--log-level", "warn"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            if self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become healthy in {timeout_s} s; see {self.log_path}")

    def _healthy(self) -> bool:
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.client_port}/health", timeout=0.5) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.data_dir, ignore_errors=True)
