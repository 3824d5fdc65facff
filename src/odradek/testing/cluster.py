"""A cluster in subprocesses for tests: a real etcd and N `odradek serve --metadata etcd://...`.

    with ClusterProcess(tmp_path, n_brokers=3, overrides={...}) as cluster:
        cluster.create_topic("t", partitions=1, replication_factor=3, min_insync_replicas=2)
        leader = cluster.wait_for_leader("t", 0)
        cluster.kill(leader)                          # SIGKILL, no controlled shutdown
        cluster.wait_for_leader("t", 0, not_in={leader})
        cluster.start(leader)                         # same node id, data dir and port
        cluster.pause(2); cluster.resume(2)           # SIGSTOP / SIGCONT
        cluster.controller(), cluster.isr_of("t", 0), cluster.bootstrap

What runs:
- `EtcdProcess`: one single-member etcd on free loopback ports with a temp data dir. Short Raft
  heartbeat and election timeouts bring etcd's minimum lease TTL down to 1 s, so a broker's
  registration lease (and with it a dead broker) expires in about a second plus the TTL the
  broker asks for.
- `ClusterBrokerProcess`: a `BrokerProcess` started as `odradek serve --node-id N --metadata
  etcd://127.0.0.1:<port> --listeners PLAINTEXT://127.0.0.1:<port> --log-dirs <dir>`; its port
  is chosen free once and kept across restarts, so the endpoint registered in etcd is stable.
  `metadata_flag=False` passes the quorum as the property `metadata.quorum` instead.
- `ClusterProcess`: the brokers (started in parallel threads), an etcd of its own unless one is
  given, and the helpers tests need: who leads a partition, the ISR, the controller, the
  coordinator of a group, all read from the brokers over the Kafka protocol (Metadata v12,
  FindCoordinator v4) with `odradek.testing.raw`, never from etcd, so a test sees what a client
  sees.

Owner: the test thread that made it. The helpers are synchronous and not thread-safe, except
that reads (`metadata`, `leader_of`, ...) open their own connection per call and may be called
from several threads. A paused broker is never asked anything (a connection to it would hang).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Self, TypeVar

from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection

ETCD_BINARY = shutil.which("etcd")
ETCD_HEARTBEAT_MS = 25
ETCD_ELECTION_MS = 250  # etcd's least lease TTL is ceil(1.5 x this): 1 s
ETCD_START_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 3.0  # one Metadata / FindCoordinator / CreateTopics round trip in the helpers
DEFAULT_WAIT_S = 30.0
NO_LEADER = -1

T = TypeVar("T")
PORT_ATTEMPTS = 3  # starts tried on fresh ports when the chosen one was taken meanwhile


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (a small race with other processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout_s: float = DEFAULT_WAIT_S, *, interval_s: float = 0.05,
               message: str | Callable[[], str] = "condition") -> T:
    """Call `predicate` until it returns something truthy and return that; AssertionError after
    `timeout_s` naming `message` (a string or a callable giving one, evaluated at the failure).
    Exceptions from the predicate count as "not yet" (a broker mid-restart refuses connections);
    the last one is chained to the AssertionError."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, TimeoutError, ValueError, AssertionError, LookupError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout_s} s waiting for {text}") from last_error
        time.sleep(interval_s)


class EtcdProcess:
    """One single-member etcd in a subprocess: a temp data dir and free loopback ports.

    `stop()`/`kill()` then `start()` keep the data dir and ports (a restart of the same member);
    `destroy()` kills it and removes the data dir. The log is `<data_dir>/etcd.log`.
    """

    def __init__(self, data_dir: str | None = None) -> None:
        if ETCD_BINARY is None:
            raise RuntimeError("the etcd binary is not installed (Debian: apt-get install etcd-server)")
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="odradek-etcd-")
        os.makedirs(self.data_dir, exist_ok=True)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.client_port)

    @property
    def url(self) -> str:
        """The `metadata.quorum` value for brokers: `etcd://127.0.0.1:<client port>`."""
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self, timeout_s: float = ETCD_START_TIMEOUT_S) -> EtcdProcess:
        assert self.process is None or self.process.poll() is not None, "etcd already running"
        client_url = f"http://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [ETCD_BINARY, "--name", "odradek-test", "--data-dir", os.path.join(self.data_dir, "data"),
                 "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                 "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                 "--initial-cluster", f"odradek-test={peer_url}",
                 "--heartbeat-interval", str(ETCD_HEARTBEAT_MS), "--election-timeout", str(ETCD_ELECTION_MS),
                 "--log-level", "warn"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            if self.healthy():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become healthy in {timeout_s} s; see {self.log_path}")

    def healthy(self) -> bool:
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

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def destroy(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class ClusterBrokerProcess(BrokerProcess):
    """A BrokerProcess in cluster mode: `--node-id` and the etcd quorum on its command line.

    The port is fixed at construction (a free one) so restarts register the same endpoint.
    """

    def __init__(self, node_id: int, data_dir: str, metadata_url: str, *, port: int | None = None,
                 overrides: dict[str, str] | None = None, metadata_flag: bool = True) -> None:
        super().__init__(data_dir, port=port or free_port(), overrides=overrides)
        self.node_id = node_id
        self.metadata_url = metadata_url
        self.metadata_flag = metadata_flag
        self.paused = False

    def start(self) -> ClusterBrokerProcess:
        """Start; if another process took the port meanwhile (free_port's race), move to a new
        free port and try again (clients rediscover it through Metadata)."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                super().start()
                return self
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def command(self) -> list[str]:
        cmd = super().command() + ["--node-id", str(self.node_id)]
        if self.metadata_flag:
            cmd += ["--metadata", self.metadata_url]
        else:
            cmd += ["--override", f"metadata.quorum={self.metadata_url}"]
        return cmd

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and lease but answers nothing until resumed."""
        assert self.running, f"broker {self.node_id} is not running"
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        if self.paused:
            self.resume()  # a stopped process still dies of SIGKILL; SIGCONT keeps `paused` honest
        super().kill()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.paused:
            self.resume()
        return super().stop(timeout_s)


class ClusterProcess:
    """etcd plus `n_brokers` broker subprocesses with node ids 1..n (see the module docstring).

    `overrides` are broker configs for every broker; `node_overrides[node]` add to them for one.
    Data dirs are `<base_dir>/broker-<node>`; a private etcd (when `etcd` is None) lives in
    `<base_dir>/etcd` and goes with the cluster at `close()`. Brokers keep their metadata under
    etcd's fixed root `/odradek` (no config names another), so an etcd passed in must not serve
    two clusters at once.
    """

    def __init__(self, base_dir: str | os.PathLike, n_brokers: int = 3, *, etcd: EtcdProcess | None = None,
                 overrides: dict[str, str] | None = None,
                 node_overrides: dict[int, dict[str, str]] | None = None,
                 metadata_flag: bool = True) -> None:
        self.base_dir = str(base_dir)
        os.makedirs(self.base_dir, exist_ok=True)
        self._own_etcd = etcd is None
        self.etcd = etcd or EtcdProcess(os.path.join(self.base_dir, "etcd"))
        self.overrides = dict(overrides or {})
        self.brokers: dict[int, ClusterBrokerProcess] = {}
        for node in range(1, n_brokers + 1):
            config = {**self.overrides, **(node_overrides or {}).get(node, {})}
            self.brokers[node] = ClusterBrokerProcess(
                node, os.path.join(self.base_dir, f"broker-{node}"), self.etcd.url,
                overrides=config, metadata_flag=metadata_flag)

    # -- lifecycle ------------------------------------------------------------------------------
    def start_all(self) -> ClusterProcess:
        """Start etcd (when ours and not running), then every broker in parallel."""
        if self.etcd.process is None or self.etcd.process.poll() is not None:
            self.etcd.start()
        self._parallel(self.brokers)
        return self

    def _parallel(self, nodes: Iterable[int]) -> None:
        errors: list[BaseException] = []

        def start(node: int) -> None:
            try:
                self.brokers[node].start()
            except BaseException as exc:  # noqa: BLE001 (reported on the caller's thread)
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(node,), daemon=True) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def start(self, node: int) -> ClusterBrokerProcess:
        """Start (or restart after kill/stop) one broker: same node id, data dir and port."""
        return self.brokers[node].start()

    def start_many(self, nodes: Iterable[int]) -> None:
        self._parallel(list(nodes))

    def kill(self, node: int) -> float:
        """SIGKILL one broker; returns the monotonic time of the kill (for failover timings)."""
        self.brokers[node].kill()
        return time.monotonic()

    def stop(self, node: int, timeout_s: float = 30.0) -> int:
        """SIGTERM (a controlled shutdown) and wait; returns the exit code."""
        return self.brokers[node].stop(timeout_s)

    def pause(self, node: int) -> float:
        self.brokers[node].pause()
        return time.monotonic()

    def resume(self, node: int) -> None:
        self.brokers[node].resume()

    def close(self) -> None:
        for broker in self.brokers.values():
            if broker.paused:
                broker.kill()  # a stopped process cannot shut down cleanly
        threads = [threading.Thread(target=b.stop, args=(10.0,), daemon=True) for b in self.brokers.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._own_etcd:
            self.etcd.destroy()

    def __enter__(self) -> Self:
        try:
            return self.start_all()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses ------------------------------------------------------------------------------
    def running_nodes(self) -> list[int]:
        """Nodes whose process runs and is not paused."""
        return [n for n, b in self.brokers.items() if b.running and not b.paused]

    @property
    def bootstrap(self) -> str:
        """Every broker's address, comma-separated (clients skip the ones that are down)."""
        return ",".join(b.bootstrap for b in self.brokers.values())

    def bootstrap_of(self, node: int) -> str:
        return self.brokers[node].bootstrap

    def connect(self, node: int, timeout_s: float = REQUEST_TIMEOUT_S) -> RawConnection:
        assert not self.brokers[node].paused, f"broker {node} is paused"
        return RawConnection(self.bootstrap_of(node), timeout_s=timeout_s)

    def output(self, node: int) -> str:
        """The broker's stderr since its last start (its log)."""
        return "".join(self.brokers[node].output)

    def diagnostics(self, topics: Iterable[str] = (), *, log_lines: int = 40) -> str:
        """For failure messages: each broker's state (running, paused, exit code), what it says
        of `topics` (leader, epoch, replicas, ISR per partition) and the last `log_lines` lines of
        its log since its last start."""
        topics = list(topics)
        parts = []
        for node, broker in self.brokers.items():
            state = ("paused" if broker.paused else "running") if broker.running else (
                f"exited {broker.process.returncode}" if broker.process is not None else "not started")
            parts.append(f"--- broker {node} ({state}, port {broker.port})")
            if broker.running and not broker.paused:
                try:
                    response = self.metadata(topics, via=node)
                    parts.append(f"controller {response.controller_id}, brokers "
                                 f"{sorted(b.node_id for b in response.brokers)}")
                    for t in response.topics:
                        for p in t.partitions:
                            parts.append(f"{t.name}-{p.partition_index}: error {p.error_code!r} leader "
                                         f"{p.leader_id} epoch {p.leader_epoch} replicas {list(p.replica_nodes)} "
                                         f"isr {list(p.isr_nodes)} offline {list(p.offline_replicas)}")
                except Exception as exc:  # noqa: BLE001 (diagnostics only)
                    parts.append(f"metadata failed: {exc!r}")
            parts.extend(line.rstrip() for line in broker.output[-log_lines:])
        return "\n".join(parts)

    # -- reads over the Kafka protocol ----------------------------------------------------------
    def _ask(self, call: Callable[[RawConnection], T], via: int | None) -> T:
        nodes = [via] if via is not None else self.running_nodes()
        last: BaseException | None = None
        for node in nodes:
            try:
                with self.connect(node) as conn:
                    return call(conn)
            except (OSError, TimeoutError, ValueError) as exc:
                last = exc
        raise ConnectionError(f"no broker answered (tried {nodes})") from last

    def metadata(self, topics: Iterable[str] | None = None, *, via: int | None = None,
                 allow_auto_topic_creation: bool = False) -> Any:
        """A Metadata v12 response from `via` (else the first running broker that answers)."""

        def call(conn: RawConnection) -> Any:
            m = conn.module("metadata", 12)
            requested = None if topics is None else tuple(
                m.MetadataRequestTopic(name=name, topic_id=uuid.UUID(int=0)) for name in topics)
            return conn.request(m.MetadataRequest(
                topics=requested, allow_auto_topic_creation=allow_auto_topic_creation,
                include_topic_authorized_operations=False))

        return self._ask(call, via)

    def partition_metadata(self, topic: str, partition: int, *, via: int | None = None) -> Any | None:
        """The MetadataResponsePartition of one partition, or None when the topic is unknown."""
        response = self.metadata([topic], via=via)
        for described in response.topics:
            if described.name == topic and described.error_code == ErrorCode.none:
                for p in described.partitions:
                    if p.partition_index == partition:
                        return p
        return None

    def leader_of(self, topic: str, partition: int = 0, *, via: int | None = None) -> int | None:
        """The partition's leader as a broker reports it (None when unknown or leaderless)."""
        p = self.partition_metadata(topic, partition, via=via)
        if p is None or p.leader_id == NO_LEADER:
            return None
        return int(p.leader_id)

    def isr_of(self, topic: str, partition: int = 0, *, via: int | None = None) -> set[int]:
        p = self.partition_metadata(topic, partition, via=via)
        return set() if p is None else {int(n) for n in p.isr_nodes}

    def controller(self, *, via: int | None = None) -> int | None:
        """The controller id a broker names in Metadata (None for -1)."""
        controller_id = int(self.metadata([], via=via).controller_id)
        return None if controller_id < 0 else controller_id

    def live_brokers(self, *, via: int | None = None) -> set[int]:
        return {int(b.node_id) for b in self.metadata([], via=via).brokers}

    def coordinator_of(self, group_id: str, *, via: int | None = None) -> int | None:
        """The group coordinator (FindCoordinator v4, key type group) or None while unavailable."""

        def call(conn: RawConnection) -> int | None:
            m = conn.module("find_coordinator", 4)
            response = conn.request(m.FindCoordinatorRequest(key_type=0, coordinator_keys=(group_id,)))
            [coordinator] = response.coordinators
            if coordinator.error_code != ErrorCode.none or coordinator.node_id < 0:
                return None
            return int(coordinator.node_id)

        return self._ask(call, via)

    # -- waits ----------------------------------------------------------------------------------
    wait_until = staticmethod(wait_until)

    def wait_for_leader(self, topic: str, partition: int = 0, *, not_in: Iterable[int] = (),
                        timeout_s: float = DEFAULT_WAIT_S) -> int:
        """A leader outside `not_in` that every running broker agrees on."""
        excluded = set(not_in)

        def agreed() -> int | None:
            seen = {self.leader_of(topic, partition, via=node) for node in self.running_nodes()}
            if len(seen) == 1:
                (leader,) = seen
                if leader is not None and leader not in excluded and leader in self.running_nodes():
                    return leader
            return None

        return wait_until(agreed, timeout_s, message=lambda: f"a leader of {topic}-{partition} outside {excluded} (now " + str(
            {n: self._safe(lambda v: self.leader_of(topic, partition, via=v), n) for n in self.running_nodes()}) + ")")

    def wait_for_isr(self, topic: str, partition: int, isr: set[int], *,
                     timeout_s: float = DEFAULT_WAIT_S) -> None:
        wait_until(lambda: self.isr_of(topic, partition) == isr, timeout_s,
                   message=lambda: f"ISR {isr} of {topic}-{partition} (now {self._safe(self.isr_of, topic, partition)})")

    def wait_for_controller(self, *, not_in: Iterable[int] = (), timeout_s: float = DEFAULT_WAIT_S) -> int:
        """A controller outside `not_in` named by every running broker."""
        excluded = set(not_in)

        def agreed() -> int | None:
            seen = {self.controller(via=node) for node in self.running_nodes()}
            if len(seen) == 1:
                (controller_id,) = seen
                if controller_id is not None and controller_id not in excluded:
                    return controller_id
            return None

        return wait_until(agreed, timeout_s, message=lambda: f"a controller outside {excluded} (now " + str(
            {n: self._safe(lambda v: self.controller(via=v), n) for n in self.running_nodes()}) + ")")

    def wait_for_brokers(self, nodes: Iterable[int] | None = None, *, timeout_s: float = DEFAULT_WAIT_S) -> None:
        """Every running broker lists exactly `nodes` (default: the running ones) in Metadata."""
        expected = set(nodes) if nodes is not None else set(self.running_nodes())
        wait_until(lambda: all(self.live_brokers(via=n) == expected for n in self.running_nodes()),
                   timeout_s, message=lambda: f"every broker to list brokers {expected} (now " + str(
                       {n: self._safe(lambda v: self.live_brokers(via=v), n) for n in self.running_nodes()}) + ")")

    @staticmethod
    def _safe(call: Callable[..., T], *args: Any) -> T | str:
        try:
            return call(*args)
        except Exception as exc:  # noqa: BLE001 (only for failure messages)
            return f"<{exc!r}>"

    # -- admin ----------------------------------------------------------------------------------
    def create_topic(self, name: str, *, partitions: int = 1, replication_factor: int = 3,
                     configs: dict[str, str] | None = None, timeout_s: float = DEFAULT_WAIT_S) -> None:
        """CreateTopics v7 sent to the controller (retried while the controller moves), then wait
        until every running broker knows a leader for every partition."""
        configs = dict(configs or {})

        def attempt() -> bool:
            controller_id = self.controller()
            if controller_id is None or controller_id not in self.running_nodes():
                return False
            with self.connect(controller_id) as conn:
                m = conn.module("create_topics", 7)
                topic = m.CreatableTopic(
                    name=name, num_partitions=partitions, replication_factor=replication_factor,
                    assignments=(),
                    configs=tuple(m.CreatableTopicConfig(name=k, value=str(v)) for k, v in configs.items()))
                response = conn.request(m.CreateTopicsRequest(topics=(topic,), timeout=timedelta(seconds=10),
                                                              validate_only=False), timeout_s=15)
            code = response.topics[0].error_code
            if code in (ErrorCode.none, ErrorCode.topic_already_exists):
                return True
            if code in (ErrorCode.not_controller, ErrorCode.request_timed_out):
                return False
            raise RuntimeError(f"CreateTopics {name}: {code!r} {response.topics[0].error_message}")

        wait_until(attempt, timeout_s, interval_s=0.2, message=f"topic {name} created")
        for index in range(partitions):
            self.wait_for_leader(name, index, timeout_s=timeout_s)


# -- clients for the "nothing acknowledged is lost" checks ------------------------------------------


class ContinuousProducer(threading.Thread):
    """An idempotent acks=all confluent-kafka producer writing `b"<seq>"` continuously.

    Values are the sequence numbers 0, 1, 2, ... in send order, round-robin over `partitions`,
    at most `records_per_s`. Each delivery report is kept: `acked[seq] = (partition, offset,
    ack_time)` (monotonic seconds), `errors[name] = count`; `sent_at[seq]` is the monotonic time
    of the produce call. librdkafka's own retries run underneath (message.timeout.ms 120 s), so
    with idempotence every record is delivered once unless the producer hits a fatal error
    (kept in `fatal`).

    Owner: its own thread calls produce/poll and writes the dicts under `_lock`; the test thread
    takes `len()` freely, iterates them only under `_lock` (or after `stop_and_flush()`, which it
    calls once). Iterating a dict while another thread inserts raises even under the GIL: the
    iteration allocates, a garbage collection can run Python code, and the thread switches.
    """

    def __init__(self, bootstrap: str, topic: str, *, partitions: int = 1, records_per_s: float = 200.0,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(name=f"continuous-producer-{topic}", daemon=True)
        from confluent_kafka import Producer

        self.topic = topic
        self.partitions = partitions
        self.records_per_s = records_per_s
        self.sent_at: dict[int, float] = {}
        self.acked: dict[int, tuple[int, int, float]] = {}
        self.errors: dict[str, int] = {}
        self.fatal: list[str] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 120_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "retry.backoff.ms": 20,
            "retry.backoff.max.ms": 200,
            "socket.connection.setup.timeout.ms": 3_000,
            "topic.metadata.refresh.interval.ms": 2_000,
            "error_cb": self._on_error,
            "log_level": 0,
            **(config or {}),
        })

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self.fatal.append(str(err))

    def _on_delivery(self, err: Any, msg: Any) -> None:
        seq = int(msg.value())
        with self._lock:
            if err is not None:
                self.errors[err.name()] = self.errors.get(err.name(), 0) + 1
            else:
                self.acked[seq] = (msg.partition(), msg.offset(), time.monotonic())

    def run(self) -> None:
        started = time.monotonic()
        seq = 0
        while not self._stop_event.is_set() and not self.fatal:
            delay_s = started + seq / self.records_per_s - time.monotonic()
            if delay_s > 0:
                self.producer.poll(min(delay_s, 0.01))
                continue
            try:
                with self._lock:
                    self.sent_at[seq] = time.monotonic()
                self.producer.produce(self.topic, value=str(seq).encode(), partition=seq % self.partitions,
                                      on_delivery=self._on_delivery)
            except BufferError:
                self.producer.poll(0.05)
                continue
            seq += 1
            self.producer.poll(0)

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def errors_now(self) -> dict[str, int]:
        with self._lock:
            return dict(self.errors)

    def first_ack_sent_after(self, t: float) -> float | None:
        """The earliest acknowledgement time of a record produced after monotonic time `t`: the
        end of a failover that started at `t` (a record sent later cannot have been acknowledged
        by a leader that was already gone)."""
        with self._lock:
            times = [ack_time for seq, (_, _, ack_time) in self.acked.items() if self.sent_at.get(seq, 0) > t]
        return min(times) if times else None

    def wait_for_ack_after(self, t: float, timeout_s: float = DEFAULT_WAIT_S) -> float:
        """Seconds from `t` to the first acknowledgement of a record sent after `t`."""
        ack_time = wait_until(lambda: self.first_ack_sent_after(t), timeout_s,
                              message=lambda: f"an acknowledged produce after the fault "
                                              f"(sent {self.sent}, acked {len(self.acked)}, errors {self.errors_now()})")
        return ack_time - t

    def stop_and_flush(self, timeout_s: float = 60.0) -> int:
        """Stop producing, wait for every outstanding delivery report; returns records left."""
        self._stop_event.set()
        self.join(10)
        return self.producer.flush(timeout_s)


def read_partitions(bootstrap: str, topic: str, partitions: Iterable[int], *,
                    timeout_s: float = DEFAULT_WAIT_S) -> list[tuple[int, int, bytes]]:
    """Every record of the partitions from offset 0 up to their high watermarks at the call,
    read with a confluent-kafka consumer (no group): [(partition, offset, value)]."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": True, "check.crcs": True,
                         "topic.metadata.refresh.interval.ms": 2_000, "log_level": 0})
    try:
        ends: dict[int, int] = {}
        for partition in partitions:
            _, high = wait_until(
                lambda p=partition: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2),
                timeout_s, message=f"watermarks of {topic}-{partition}")
            ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        records: list[tuple[int, int, bytes]] = []
        positions = {p: 0 for p in ends}
        deadline = time.monotonic() + timeout_s
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {topic} to {ends}: stuck at {positions}")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                if msg.error().fatal() or msg.error().code() in (KafkaError._BAD_MSG, KafkaError.CORRUPT_MESSAGE):
                    raise AssertionError(f"consumer error: {msg.error()}")
                continue  # a broker down or moving: librdkafka retries
            if msg.offset() < ends[msg.partition()]:
                records.append((msg.partition(), msg.offset(), msg.value()))
            positions[msg.partition()] = max(positions[msg.partition()], msg.offset() + 1)
        return records
    finally:
        consumer.close()


class ContinuousConsumer(threading.Thread):
    """A confluent-kafka consumer reading assigned partitions from offset 0 in a thread, without
    a group, keeping every record it is given: `seen[(partition, offset)] = value` and
    `deliveries` (how many records were handed over, re-reads included), `fatal` errors.

    Used to show that consumers resume after a failover and never see a record that is later
    replaced (a record above the high watermark that a new leader truncated would show up as a
    `seen` value that differs from the final log at that offset).
    Owner: its own thread polls and writes `seen` under `_lock`; the test thread copies it under
    `_lock` while the thread runs (see ContinuousProducer) and calls `stop()` once.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: Iterable[int]) -> None:
        super().__init__(name=f"continuous-consumer-{topic}", daemon=True)
        from confluent_kafka import Consumer

        self.topic = topic
        self.partitions = list(partitions)
        self.seen: dict[tuple[int, int], bytes] = {}
        self.deliveries = 0
        self.fatal: list[str] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watcher-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "check.crcs": True, "fetch.wait.max.ms": 100,
                                  "topic.metadata.refresh.interval.ms": 2_000,
                                  "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200, "log_level": 0})

    def run(self) -> None:
        from confluent_kafka import KafkaError, TopicPartition

        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in self.partitions])
        try:
            while not self._stop_event.is_set():
                msg = self.consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    error = msg.error()
                    if error.fatal() or error.code() in (KafkaError._BAD_MSG, KafkaError.CORRUPT_MESSAGE):
                        self.fatal.append(str(error))
                    continue
                with self._lock:
                    self.deliveries += 1
                    self.seen[(msg.partition(), msg.offset())] = msg.value()
        finally:
            self.consumer.close()

    def wait_for(self, ends: dict[int, int], timeout_s: float = DEFAULT_WAIT_S) -> None:
        """Until every offset below `ends[partition]` has been seen."""
        def caught_up() -> bool:
            with self._lock:
                seen = set(self.seen)
            return all((p, o) in seen for p, end in ends.items() for o in range(end))

        wait_until(caught_up, timeout_s, interval_s=0.1,
                   message=lambda: f"the consumer to read up to {ends} (seen {len(self.seen)})")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
