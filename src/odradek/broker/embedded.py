"""`odradek.Broker`: a broker in your own process, for tests and tools.

    async with Broker() as broker:            # a fresh temporary data directory, a free port
        producer = Producer({"bootstrap.servers": broker.bootstrap})

`Broker(data_dir=..., port=..., **configs)` takes Kafka config names with dots replaced by
underscores (`num_partitions=3`, `log_segment_bytes=1048576`) or a `configs` dict of Kafka names.
The broker runs on the caller's event loop; for synchronous code (pytest fixtures, scripts),
`Broker.start_in_thread()` runs it on a loop of its own and returns a handle with `.bootstrap`
and `.stop()`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from typing import Any

from odradek.config import BrokerConfig


class Broker:
    def __init__(self, data_dir: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 configs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._temporary = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="odradek-")
        overrides = {"listeners": f"PLAINTEXT://{host}:{port}", "log.dirs": self.data_dir}
        for key, value in {**(configs or {}), **{k.replace("_", "."): v for k, v in kwargs.items()}}.items():
            overrides[key] = str(value).lower() if isinstance(value, bool) else str(value)
        self.config, self.warnings = BrokerConfig.load(None, overrides)
        self._server = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port` of the first listener, for `bootstrap.servers`."""
        host, port = next(iter(self._server.bound.values()))
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return next(iter(self._server.bound.values()))[1]

    @property
    def core(self):
        return self._server.core

    async def start(self) -> "Broker":
        from odradek.broker.server import BrokerServer

        self._server = BrokerServer(self.config)
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def __aenter__(self) -> "Broker":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- for synchronous callers -------------------------------------------------------------
    def start_in_thread(self) -> "Broker":
        """Run the broker on its own event loop in a daemon thread; returns once it serves."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            from odradek.broker.server import new_event_loop

            self._loop = new_event_loop()
            try:
                self._loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="odradek-broker", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "Broker":
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()
