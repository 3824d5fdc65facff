"""Run a broker as a subprocess, for tests that kill, restart and inspect it from outside.

    with BrokerProcess(data_dir) as broker:      # `odradek serve` on a free port
        ... broker.bootstrap ...
        broker.kill()                            # SIGKILL, no clean shutdown
        broker.start()                           # same data dir, same port

The broker is started with `listeners=PLAINTEXT://127.0.0.1:<port>`; the first start asks for
port 0 and learns the real port from the broker's ready line, later starts reuse it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

READY = re.compile(r"ready on PLAINTEXT://([\d.]+):(\d+)")
START_TIMEOUT_S = 30.0


class BrokerProcess:
    def __init__(self, data_dir: str, *, port: int = 0, overrides: dict[str, str] | None = None,
                 config_file: str | None = None) -> None:
        self.data_dir = str(data_dir)
        self.port = port
        self.overrides = dict(overrides or {})
        self.config_file = config_file
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "odradek", "serve", "--listeners", f"PLAINTEXT://127.0.0.1:{self.port}",
               "--log-dirs", self.data_dir]
        if self.config_file:
            cmd += ["--config", self.config_file]
        for key, value in self.overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def start(self) -> "BrokerProcess":
        assert self.process is None or self.process.poll() is not None, "already running"
        self.output = []
        self.process = subprocess.Popen(self.command(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ready = threading.Event()

        def pump() -> None:
            for line in self.process.stderr:
                self.output.append(line)
                match = READY.search(line)
                if match and not ready.is_set():
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.wait(0.05):
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("broker did not become ready:\n" + "".join(self.output))
        if not any(READY.search(line) for line in self.output):
            # The output ended without the ready line: the broker is exiting (or has exited).
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            raise RuntimeError(f"broker exited at start (code {self.process.returncode}):\n" + "".join(self.output))
        return self

    def kill(self) -> None:
        """SIGKILL: the broker gets no chance to flush or checkpoint."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def restart(self) -> "BrokerProcess":
        self.stop()
        return self.start()

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
