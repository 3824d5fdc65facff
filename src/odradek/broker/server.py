"""The broker process: listeners, background housekeeping, start and stop.

`BrokerServer` binds each listener, serves connections with `KafkaConnection`, and runs one
housekeeping task (idle connections, flush.ms, checkpoints). `serve()` is what `odradek serve`
runs: it loads the config, installs uvloop when available, logs one line when ready, and stops
cleanly on SIGTERM or SIGINT (logs flushed, checkpoints and the clean-shutdown marker written).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import socket
import sys
import time

from odradek.broker.connection import KafkaConnection
from odradek.broker.core import BrokerCore
from odradek.config import BrokerConfig, ConfigError
from odradek.runtime.clock import monotonic_ms

log = logging.getLogger("odradek")

HOUSEKEEPING_INTERVAL_S = 1.0
LISTEN_BACKLOG = 1024

# What a client's first requests import (the everyday handlers, the group coordinator, the
# compacted-log cleaner that `__consumer_offsets` brings): start-up leaves them out (DESIGN,
# principle 6) and the loop imports them right after the broker is ready, one module per loop
# turn so that requests get in between, so that the first consumer of a fresh broker does not
# wait ~25-40 ms for them. On the loop, not in a thread: the imports hold the GIL either way, and
# two threads importing modules that import each other can fail with a deadlock error. kio's
# per-version modules stay lazy (which versions a client picks is not known). The short delay
# leaves the loop to a client that connects the moment the broker is ready (a test fixture).
WARM_DELAY_S = 0.05
WARM_MODULES = tuple(f"odradek.broker.handlers.{name}" for name in (
    "api_versions", "metadata", "produce", "fetch", "list_offsets", "find_coordinator", "join_group",
    "sync_group", "heartbeat", "leave_group", "offset_commit", "offset_fetch", "init_producer_id",
)) + ("odradek.broker.group_service", "odradek.protocol.fetch_response", "odradek.storage.cleaner")


class StartupError(Exception):
    """The broker could not start (data directory locked, address in use): one clear line."""


class BrokerServer:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.core = BrokerCore(config)
        self._servers: list[asyncio.base_events.Server] = []
        self._housekeeping: asyncio.Task | None = None
        self.bound: dict[str, tuple[str, int]] = {}  # listener name -> actual (host, port)

    async def start(self) -> None:
        from odradek.metadata.store import MetadataStoreError
        from odradek.storage.log_manager import DataDirLockedError

        started = time.perf_counter()
        try:
            self.core.open()
        except (DataDirLockedError, MetadataStoreError) as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            # An I/O error while recovering the data: the traceback says where, for the bug report.
            log.exception("cannot open the data in %s", ", ".join(self.config.log_dirs))
            raise StartupError(f"cannot open the data in {', '.join(self.config.log_dirs)}: {exc}") from None
        loop = asyncio.get_running_loop()
        try:
            for listener in self.config.listeners:
                try:
                    server = await loop.create_server(
                        lambda name=listener.name: KafkaConnection(self.core, name),
                        host=listener.host or None,
                        port=listener.port,
                        reuse_address=True,
                        backlog=LISTEN_BACKLOG,
                    )
                except OSError as exc:
                    raise StartupError(f"cannot listen on {listener}: {exc.strerror or exc}") from None
                self._servers.append(server)
                sockname = server.sockets[0].getsockname()
                self.bound[listener.name] = (listener.host or sockname[0], sockname[1])
        except BaseException:
            await self.stop()
            raise
        self.core.endpoints = self._advertised()
        if self.config.metadata_quorum:
            try:
                await self.core.join_cluster()
            except Exception as exc:
                await self.stop()
                raise StartupError(f"cannot join the metadata quorum {self.config.metadata_quorum}: {exc}") from None
        self._housekeeping = loop.create_task(self._housekeep())
        loop.call_later(WARM_DELAY_S, _warm_imports, loop, iter(WARM_MODULES))
        listeners = ", ".join(f"{name}://{host}:{port}" for name, (host, port) in self.bound.items())
        log.info("Odradek broker %d ready on %s (data in %s, cluster %s) in %.0f ms",
                 self.config.node_id, listeners, ", ".join(self.config.log_dirs), self.core.cluster_id,
                 (time.perf_counter() - started) * 1000)

    def _advertised(self) -> dict[str, tuple[str, int]]:
        endpoints = {}
        advertised = {l.name: l for l in self.config.advertised_listeners or ()}
        for name, (host, port) in self.bound.items():
            if name in advertised:
                a = advertised[name]
                endpoints[name] = (a.host or host, a.port or port)
            elif host in ("", "0.0.0.0", "::"):
                endpoints[name] = (socket.getfqdn(), port)
            else:
                endpoints[name] = (host, port)
        return endpoints

    async def _housekeep(self) -> None:
        checkpoint_interval_ms = self.config.log_flush_offset_checkpoint_interval_ms
        next_checkpoint_ms = monotonic_ms() + checkpoint_interval_ms
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            try:
                self.core.connections.close_idle()
                await self.core.flush_due()
                await self.core.log_lifecycle_due()  # retention, the cleaner
                if monotonic_ms() >= next_checkpoint_ms:
                    await self.core.checkpoint()
                    next_checkpoint_ms = monotonic_ms() + checkpoint_interval_ms
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed")

    async def stop(self) -> None:
        if self.core.cluster is not None:
            await self.core.controlled_shutdown()  # leadership moves away while we still serve
        for server in self._servers:
            server.close()
        self.core.connections.close_all()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            try:
                await self._housekeeping
            except asyncio.CancelledError:
                pass
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        await self.core.leave_cluster()
        self.core.close()
        log.info("Odradek broker %d stopped cleanly", self.config.node_id)


def raise_open_file_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit: every hosted partition keeps its active
    segment's files open, as Kafka does (whose docs ask for a limit of 100,000 or more)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError) as exc:
        log.warning("could not raise the open file limit: %s", exc)


def _warm_imports(loop: asyncio.AbstractEventLoop, names) -> None:
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # the request that needs it imports it again and reports
            log.debug("warming %s failed", name, exc_info=True)
        loop.call_soon(_warm_imports, loop, names)  # the rest on a later turn
        return


def install_event_loop_policy() -> None:
    """uvloop when installed (faster per request); the stock loop otherwise. For `serve` only:
    the policy is process-wide, so an embedded broker uses `new_event_loop()` instead."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh loop of the kind `serve` uses, without touching the process-wide policy."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(config_path: str | None, overrides: dict[str, str]) -> int:
    """Run a broker until SIGTERM/SIGINT. Returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        config, warnings = BrokerConfig.load(config_path, overrides)
    except ConfigError as exc:
        print(f"odradek: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"odradek: cannot read {config_path}: {exc.strerror}", file=sys.stderr)
        return 2
    for warning in warnings:
        log.warning("%s", warning)
    raise_open_file_limit()
    install_event_loop_policy()
    try:
        asyncio.run(_serve_until_signalled(config))
    except StartupError as exc:
        print(f"odradek: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signalled(config: BrokerConfig) -> None:
    server = BrokerServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
