"""EtcdMetadataStore: the cluster's metadata quorum on etcd, and the controller election.

A cluster keeps its metadata in etcd (an existing, heavily tested Raft store) instead of each
broker's embedded log; `etcd_layout` documents the keys field by field. Each broker's store:

  * registers the broker under `brokers/<node id>` attached to a lease it keeps alive (every
    TTL/3); a broker that stops renewing (dead, SIGKILL, SIGSTOP longer than the TTL) loses the
    key when etcd expires the lease, and every store's `live_brokers` and broker listeners hear it;
  * campaigns (unless `campaign=False`) for the `controller` key under the same lease: the key is
    created only if absent, and `controller_epoch` is bumped in the same transaction. A new
    controller takes over within about one lease TTL of the old one's lease expiring;
  * watches the whole cluster prefix and applies every new `log/<sequence>` entry, in order, to a
    copy of the image, publishes the copy, then calls the listeners (as MetadataStore does);
  * `append(records)` (controller only) writes the next log entry with compare-and-swap: the
    transaction succeeds only if the controller key still has the create_revision of this
    broker's term and the next sequence key does not exist, so a deposed controller never writes,
    whatever it believes.

Controller state, one table (the store derives `is_controller` from three facts it observes):

    controller key is this term's   lease renewed within TTL   store in sync   ->  is_controller
    yes                              yes                        yes                True
    any other combination                                                          False

`is_controller` flips to False as soon as this broker cannot renew its lease for a TTL (it may
already be deposed), and back to True if the renewal recovers before etcd expired the lease.
Being False never makes an append succeed or fail: etcd's compare decides.

Watch resumption: every (re)start of the watch first re-reads the prefix at one etcd revision R
(snapshot, log entries after the last applied sequence, brokers, controller; paged, each value
size-checked), applies what this store has not yet applied, then watches from R+1. So a dropped
watch, an etcd restart or a compacted revision history resume from the last applied entry, and a
snapshot that overtook the store (its entries deleted) replaces the image as a whole, with
listeners told the difference.

Snapshots: once the log holds `snapshot_after_entries` entries past the last snapshot, the
controller writes the image's records (`MetadataImage.to_records`) in MAX_VALUE_BYTES chunks, then
in one transaction (still guarded by its term) the last chunk, the descriptor, and the deletion of
the entries and older chunks the snapshot replaces. So etcd holds a bounded log.

Reconnection: every failure to reach etcd (refused, timed out, stream broken) closes the client,
moves to the next endpoint and retries after a backoff (RECONNECT_BACKOFF_MIN_MS doubling to
RECONNECT_BACKOFF_MAX_MS). The lease keepalive, bounded well below the TTL, doubles as the
connection's liveness probe: a member that stops answering (or has lost its Raft leader, where
keepalives fail) is left for the next one, which also ends and restarts the watch.
etcd must accept requests of MAX_VALUE_BYTES plus a little (its default --max-request-bytes,
1.5 MiB, does).

Errors leave this module as MetadataQuorumError carrying a Kafka ErrorCode (NOT_CONTROLLER,
REQUEST_TIMED_OUT, DUPLICATE_BROKER_REGISTRATION, ...). A log entry that does not decode or apply
(a newer version's record, a bug) stops this store's applying (the image stays at the last good
entry, `fatal_error` says why), as MetadataStore refuses to open such a log.

Owned by the BrokerCore: every method runs on its event loop; `append` calls are serialised by
the caller (the core's metadata write lock). Listeners are plain callables run on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence

import aetcd
import crc32c
import grpc

from odradek.metadata import etcd_layout as layout
from odradek.metadata.etcd_layout import (
    BrokerEndpoint,
    ControllerClaim,
    LayoutError,
    LiveBroker,
    SnapshotDescriptor,
    image_changes,
    parse_etcd_url,
)
from odradek.metadata.image import Change, InvalidMetadataRecord, MetadataImage
from odradek.metadata.records import MetadataRecord
from odradek.metadata.store import generate_cluster_id
from odradek.protocol.errors import ErrorCode

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_S = 10  # Kafka's broker.session.timeout.ms is 9 s; etcd leases are whole seconds
DEFAULT_RPC_TIMEOUT_S = 5.0
DEFAULT_OPEN_TIMEOUT_S = 30.0
SNAPSHOT_AFTER_ENTRIES = 1000  # the controller snapshots the image when the log holds this many
RANGE_PAGE_KEYS = 16  # keys per ranged read: at most 16 x MAX_VALUE_BYTES per response
MAX_GRPC_MESSAGE_BYTES = 64 * 1024 * 1024  # bound on one etcd response (pages and watch batches)
MAX_RESYNC_BYTES = 1024 * 1024 * 1024  # bound on everything one resync reads
MAX_LIVE_BROKERS = 100_000
RECONNECT_BACKOFF_MIN_MS = 50
RECONNECT_BACKOFF_MAX_MS = 2_000
ELECTION_POLL_S = 1.0
KEEPALIVE_MIN_TIMEOUT_S = 0.5
CLOSE_TIMEOUT_S = 2.0  # close() waits this long for its tasks to stop  # the election loop re-checks at least this often, watch or not

Listener = Callable[[MetadataImage, MetadataImage, list[Change]], None]
BrokerListener = Callable[[dict[int, LiveBroker], dict[int, LiveBroker]], None]
ControllerListener = Callable[[bool], None]

# Failures that mean "etcd is not reachable right now": reconnect and retry.
_TRANSIENT = (aetcd.ClientError, grpc.RpcError, asyncio.TimeoutError, OSError)


class MetadataQuorumError(Exception):
    """A metadata quorum operation failed; `error_code` is what a Kafka client should see."""

    def __init__(self, error_code: ErrorCode, message: str, *, deposed: bool = False) -> None:
        super().__init__(f"{error_code.name}: {message}")
        self.error_code = error_code
        self.deposed = deposed


class _Backoff:
    """Exponential reconnect backoff with jitter, reset by a success."""

    def __init__(self) -> None:
        self._delay_ms = RECONNECT_BACKOFF_MIN_MS

    def reset(self) -> None:
        self._delay_ms = RECONNECT_BACKOFF_MIN_MS

    def next_delay_s(self) -> float:
        delay_ms = self._delay_ms * (0.5 + random.random() / 2)
        self._delay_ms = min(self._delay_ms * 2, RECONNECT_BACKOFF_MAX_MS)
        return delay_ms / 1000


class _EtcdConnection:
    """One aetcd client at a time, to one of the endpoints; `reset` drops it and moves on.

    The store's tasks share it; a task that saw `client` fail calls `reset(client)`, and only the
    first such call per client closes it (closing also ends its watch streams).
    """

    def __init__(self, endpoints: Sequence[tuple[str, int]], rpc_timeout_s: float) -> None:
        assert endpoints
        self.endpoints = list(endpoints)
        self.rpc_timeout_s = rpc_timeout_s
        self._index = 0
        self._client: aetcd.Client | None = None

    def client(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._index]
            self._client = aetcd.Client(host=host, port=port, timeout=self.rpc_timeout_s, options={
                "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_BYTES,
                "grpc.initial_reconnect_backoff_ms": RECONNECT_BACKOFF_MIN_MS,
                "grpc.min_reconnect_backoff_ms": RECONNECT_BACKOFF_MIN_MS,
                "grpc.max_reconnect_backoff_ms": RECONNECT_BACKOFF_MAX_MS,
            })
        return self._client

    async def reset(self, client: aetcd.Client | None) -> None:
        if client is None or client is not self._client:
            return
        self._client = None
        self._index = (self._index + 1) % len(self.endpoints)
        await _close_quietly(client)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)


async def _close_quietly(client: aetcd.Client) -> None:
    try:
        await _rpc(client.close(), 2.0)
    except Exception:  # closing a broken channel: nothing left to save
        log.debug("closing etcd client failed", exc_info=True)


class _ConnectionReset(aetcd.ClientError):
    """An etcd call cut short because another task closed the shared client."""


async def _rpc(awaitable, timeout_s: float | None = None):
    """Await one etcd call (bounded by `timeout_s` when given).

    grpc.aio cancels the calls in flight on a channel being closed (another task reset the shared
    connection), which shows as CancelledError in a task nobody cancelled: that becomes a
    transient _ConnectionReset. A real cancellation of the calling task still propagates.
    """
    try:
        if timeout_s is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise _ConnectionReset("etcd call cut short by a connection reset") from None


class _ResyncNeeded(Exception):
    """The watch saw something only a full re-read explains (a gap, a newer snapshot)."""


class _Fatal(Exception):
    """A log entry that cannot be decoded or applied: stop applying."""


class EtcdMetadataStore:
    """One broker's view of the cluster metadata in etcd, its registration and its election.

    Holds: `image` (MetadataImage after `applied_sequence` log entries, published copy-on-write),
    `live_brokers` (node id -> LiveBroker, from the leased `brokers/` keys), the controller's
    node id and epoch, and whether this broker `is_controller`.
    Layout in etcd: see `etcd_layout`. Controller state and resumption: see the module docstring.

    Invariants: `image` is the snapshot `applied_sequence` was built from plus the log entries up
    to `applied_sequence`, each applied exactly once, in order; listeners see every published
    image once, in order. This store writes log entries only through the compare-and-swap in
    `append` and `compact`.
    Owned by the BrokerCore, on its event loop; three background tasks (watch, lease keepalive,
    election) run on the same loop and stop at `close`.
    """

    def __init__(self, conn: _EtcdConnection, node_id: int, root: str, *, registration_endpoints:
                 tuple[BrokerEndpoint, ...], rack: str | None, lease_ttl_s: int, campaign: bool,
                 snapshot_after_entries: int) -> None:
        self._conn = conn
        self.node_id = node_id
        self.root = root
        self.cluster_id = ""
        self.prefix = ""
        self.incarnation_id = layout.new_incarnation_id()
        self.registration = LiveBroker(node_id, self.incarnation_id, registration_endpoints, rack)
        self.lease_ttl_s = lease_ttl_s
        self.campaign = campaign
        self.snapshot_after_entries = snapshot_after_entries

        self.image = MetadataImage()
        self.applied_sequence = 0
        self.listeners: list[Listener] = []
        self.live_brokers: dict[int, LiveBroker] = {}
        self.broker_listeners: list[BrokerListener] = []
        self.controller_listeners: list[ControllerListener] = []
        self.controller_id: int | None = None
        self.controller_epoch = 0
        self._controller_flag = False  # as last announced to controller_listeners
        self.fatal_error: Exception | None = None

        self._lease_id: int | None = None
        self._lease_renewed_at = 0.0  # time.monotonic() of the last successful grant or renewal
        self._keepalive_paused = False
        self._registered = False  # brokers/<node id> is ours under the current lease
        self._duplicate_seen = False  # another incarnation held brokers/<node id> when we tried
        self._term_revision = 0  # create_revision of the controller key this broker last created
        self._controller_create_revision = 0  # of the controller key as last seen (0: none)
        self._controller_lease = 0
        self._snapshot_sequence = 0
        self._snapshot_mod_revision = 0
        self._synced = False
        self._synced_event = asyncio.Event()
        self._applied_event = asyncio.Event()  # set (and replaced) whenever applied_sequence grows
        self._election_wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        self._compaction: asyncio.Task | None = None

    # -- opening and closing -------------------------------------------------------------------
    @classmethod
    async def open(cls, endpoints: str | Sequence[tuple[str, int]], node_id: int, *,
                   cluster_id: str | None = None, root: str = layout.DEFAULT_ROOT,
                   listeners: Sequence[BrokerEndpoint] = (), rack: str | None = None,
                   lease_ttl_s: int = DEFAULT_LEASE_TTL_S, campaign: bool = True,
                   rpc_timeout_s: float = DEFAULT_RPC_TIMEOUT_S, open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
                   snapshot_after_entries: int = SNAPSHOT_AFTER_ENTRIES) -> EtcdMetadataStore:
        """Connect, join the cluster (creating its id if none is given and none exists),
        register this broker under a fresh lease, read the metadata and start watching it.

        `endpoints` is an `etcd://host:port[,host:port]` URL or (host, port) pairs. `listeners` are
        the broker's advertised listeners, written into its registration. Raises MetadataQuorumError:
        REQUEST_TIMED_OUT when etcd cannot be reached within `open_timeout_s`,
        DUPLICATE_BROKER_REGISTRATION when another live broker holds `node_id` that long,
        UNKNOWN_SERVER_ERROR when the stored metadata cannot be used.
        """
        pairs = parse_etcd_url(endpoints) if isinstance(endpoints, str) else list(endpoints)
        if lease_ttl_s < 1:
            raise ValueError("lease_ttl_s must be at least 1 (etcd rounds up to its own minimum)")
        store = cls(_EtcdConnection(pairs, rpc_timeout_s), node_id, root, registration_endpoints=tuple(listeners),
                    rack=rack, lease_ttl_s=lease_ttl_s, campaign=campaign,
                    snapshot_after_entries=snapshot_after_entries)
        try:
            await asyncio.wait_for(store._start(cluster_id), open_timeout_s)
        except TimeoutError:
            await store.close(revoke_lease=False)
            raise MetadataQuorumError(ErrorCode.duplicate_broker_registration if store._duplicate_seen
                                      and not store._registered else ErrorCode.request_timed_out,
                                      f"could not join the metadata quorum at {pairs} within {open_timeout_s} s")
        except BaseException:
            await store.close(revoke_lease=False)
            raise
        return store

    async def _start(self, cluster_id: str | None) -> None:
        backoff = _Backoff()
        while True:
            client = self._conn.client()
            try:
                self.cluster_id = cluster_id or await self._resolve_cluster_id(client)
                self.prefix = layout.cluster_prefix(self.root, self.cluster_id)
                self.image = MetadataImage(cluster_id=self.cluster_id)
                if self._lease_id is None or not await self._renew(client):
                    await self._grant_lease(client)  # first, or expired while we waited to register
                if await self._register(client):
                    break
            except _TRANSIENT as exc:
                log.info("etcd not reachable yet (%s); retrying", exc)
                await self._conn.reset(client)
            await asyncio.sleep(backoff.next_delay_s())
        self._registered = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_loop(), name=f"etcd-watch-{self.node_id}"),
                       loop.create_task(self._keepalive_loop(), name=f"etcd-keepalive-{self.node_id}"),
                       loop.create_task(self._election_loop(), name=f"etcd-election-{self.node_id}")]
        waiter = loop.create_task(self._synced_event.wait())
        done, _ = await asyncio.wait([waiter, self._tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
        if self.fatal_error is not None:
            raise MetadataQuorumError(ErrorCode.unknown_server_error,
                                      f"the metadata in etcd cannot be used: {self.fatal_error}")

    async def close(self, *, revoke_lease: bool = True) -> None:
        """Stop the tasks; with `revoke_lease` (a clean shutdown) give up the controller key and
        the registration at once instead of letting the lease expire."""
        self._closing = True
        if revoke_lease and self._lease_id is not None:
            try:
                await _rpc(self._conn.client().revoke_lease(self._lease_id), self._conn.rpc_timeout_s)
            except (TimeoutError, *_TRANSIENT):
                log.info("could not revoke lease %x at close; it expires in %d s", self._lease_id, self.lease_ttl_s)
        tasks = self._tasks + ([self._compaction] if self._compaction else [])
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in pending:  # a bug: report where it is stuck, and close the channel anyway
                log.error("etcd metadata store task %s did not stop within %s s", task.get_name(), CLOSE_TIMEOUT_S)
                task.print_stack()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("etcd metadata store task %s failed", task.get_name(), exc_info=task.exception())
        self._tasks = []
        self._set_controller(False)
        await self._conn.close()

    # -- test hooks ------------------------------------------------------------------------------
    def pause_keepalive(self) -> None:
        """Stop renewing the lease, as a SIGSTOPped broker would (the lease then expires)."""
        self._keepalive_paused = True

    def resume_keepalive(self) -> None:
        self._keepalive_paused = False

    @property
    def lease_id(self) -> int | None:
        return self._lease_id

    async def wait_for_sequence(self, sequence: int, timeout_s: float) -> None:
        """Wait until the image includes log entry `sequence`; raises asyncio.TimeoutError."""
        async def wait() -> None:
            while self.applied_sequence < sequence:
                await self._applied_event.wait()
        await asyncio.wait_for(wait(), timeout_s)

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> None:
        """Poll `predicate` on the loop until it holds; raises asyncio.TimeoutError."""
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(poll_s)
        await asyncio.wait_for(wait(), timeout_s)

    # -- cluster id, lease and registration ------------------------------------------------------
    async def _resolve_cluster_id(self, client: aetcd.Client) -> str:
        key = layout.cluster_id_key(self.root)
        candidate = generate_cluster_id()
        tx = client.transactions
        created, responses = await _rpc(client.transaction(
            compare=[tx.create(key) == 0], success=[tx.put(key, candidate.encode("ascii"))], failure=[tx.get(key)]))
        if created:
            log.info("created cluster id %s under %s", candidate, self.root)
            return candidate
        value = responses[0][0][0] if responses and responses[0] else b""
        layout.check_size("cluster id", value, 64)
        return value.decode("ascii")

    async def _grant_lease(self, client: aetcd.Client) -> None:
        sent_at = time.monotonic()  # etcd starts the TTL no earlier than this
        lease = await _rpc(client.lease(self.lease_ttl_s))
        self._lease_id = lease.id
        self._lease_renewed_at = sent_at
        self._registered = False

    async def _register(self, client: aetcd.Client) -> bool:
        """Put `brokers/<node id>` under the lease unless another incarnation holds it."""
        key = layout.broker_key(self.prefix, self.node_id)
        tx = client.transactions
        ok, responses = await _rpc(client.transaction(
            compare=[tx.create(key) == 0], success=[tx.put(key, self.registration.encode(), lease=self._lease_id)],
            failure=[tx.get(key)]))
        if ok:
            return True
        existing = responses[0][0][1] if responses and responses[0] else None
        if existing is not None and existing.lease == self._lease_id:
            return True  # our own earlier attempt, whose answer was lost
        self._duplicate_seen = True
        log.warning("node id %d is registered by another live broker; waiting for its lease to expire",
                    self.node_id)
        return False

    async def request_controlled_shutdown(self) -> None:
        """Mark this broker's registration `in_controlled_shutdown`: the controller then moves
        its leaderships away (Kafka's BrokerHeartbeat wantShutDown). Raises MetadataQuorumError
        as `update_registration`."""
        current = self.registration
        await self.update_registration(current.endpoints, current.rack, in_controlled_shutdown=True)

    async def update_registration(self, advertised_listeners: Sequence[BrokerEndpoint],
                                  rack: str | None = None, *, in_controlled_shutdown: bool = False) -> None:
        """Rewrite this broker's registration (say, once its listeners are bound and their ports
        known), under the same lease; only if the key still holds this incarnation's value.
        Raises MetadataQuorumError REQUEST_TIMED_OUT when etcd is unreachable or the registration
        is being renewed (the renewal then writes the new endpoints)."""
        previous = self.registration
        self.registration = LiveBroker(self.node_id, self.incarnation_id, tuple(advertised_listeners), rack,
                                       in_controlled_shutdown)
        key = layout.broker_key(self.prefix, self.node_id)
        client = self._conn.client()
        tx = client.transactions
        try:
            ok, _ = await _rpc(client.transaction(compare=[tx.value(key) == previous.encode()],
                                             success=[tx.put(key, self.registration.encode(), lease=self._lease_id)],
                                             failure=[]))
        except _TRANSIENT as exc:
            await self._conn.reset(client)
            raise MetadataQuorumError(ErrorCode.request_timed_out, f"etcd unreachable: {exc}") from None
        if not ok:
            raise MetadataQuorumError(ErrorCode.request_timed_out,
                                      f"the registration of broker {self.node_id} is being renewed")

    async def _keepalive_loop(self) -> None:
        backoff = _Backoff()
        while not self._closing:
            await asyncio.sleep(self.lease_ttl_s / 3)
            if self._keepalive_paused:
                self._update_controller_state()
                continue
            client = self._conn.client()
            try:
                sent_at = time.monotonic()
                if await self._renew(client):
                    self._lease_renewed_at = sent_at
                else:
                    log.warning("lease %x of broker %d expired; registering again under a new lease",
                                self._lease_id, self.node_id)
                    await self._grant_lease(client)  # the old term's controller key is gone with it
                if not self._registered:
                    self._registered = await self._register(client)
                    if self._registered:
                        self._election_wakeup.set()
                backoff.reset()
            except _TRANSIENT as exc:
                log.info("lease keepalive failed (%s); reconnecting", exc)
                await self._conn.reset(client)
                await asyncio.sleep(backoff.next_delay_s())
            finally:
                self._update_controller_state()

    async def _renew(self, client: aetcd.Client) -> bool:
        """One keepalive of the lease: False when etcd says it expired.

        Bounded well below the TTL: this round trip is also the liveness probe of the shared
        connection (a failure resets it, which ends and restarts the watch)."""
        reply = await _rpc(client.refresh_lease(self._lease_id), max(KEEPALIVE_MIN_TIMEOUT_S, self.lease_ttl_s / 3))
        if reply is None:
            raise _ConnectionReset("the keepalive stream ended without an answer")
        return reply.TTL > 0

    def _lease_fresh(self) -> bool:
        return (self._lease_id is not None and not self._keepalive_paused
                and time.monotonic() - self._lease_renewed_at < self.lease_ttl_s)

    # -- election --------------------------------------------------------------------------------
    async def _election_loop(self) -> None:
        backoff = _Backoff()
        while not self._closing:
            try:
                await asyncio.wait_for(self._election_wakeup.wait(), ELECTION_POLL_S)
            except TimeoutError:
                pass
            self._election_wakeup.clear()
            if (not self.campaign or not self._synced or self._controller_create_revision
                    or not self._registered or not self._lease_fresh() or self.fatal_error is not None):
                continue
            client = self._conn.client()
            try:
                await self._campaign(client)
                backoff.reset()
            except _TRANSIENT as exc:
                log.info("controller campaign failed (%s); reconnecting", exc)
                await self._conn.reset(client)
                await asyncio.sleep(backoff.next_delay_s())

    async def _campaign(self, client: aetcd.Client) -> None:
        """Create the controller key if nobody holds it, bumping the controller epoch with it."""
        controller_key = layout.key(self.prefix, layout.CONTROLLER_KEY)
        epoch_key = layout.key(self.prefix, layout.CONTROLLER_EPOCH_KEY)
        current = await _rpc(client.get(epoch_key))
        epoch, epoch_mod = 0, 0
        if current is not None:
            layout.check_size("controller epoch", current.value, 32)
            epoch, epoch_mod = int(current.value), current.mod_revision
        claim = ControllerClaim(self.node_id, self.incarnation_id, epoch + 1)
        tx = client.transactions
        won, responses = await _rpc(client.transaction(
            compare=[tx.create(controller_key) == 0, tx.mod(epoch_key) == epoch_mod],
            success=[tx.put(controller_key, claim.encode(), lease=self._lease_id),
                     tx.put(epoch_key, str(epoch + 1).encode("ascii"))],
            failure=[]))
        if won:
            self._term_revision = responses[0].response_put.header.revision
            log.info("broker %d won the controller election (epoch %d, revision %d)",
                     self.node_id, epoch + 1, self._term_revision)
            # The term counts once the watch has seen the key (so every entry written before it
            # is applied); if the watch saw it before this answer arrived, that is now.
            self._update_controller_state()

    async def resign(self) -> None:
        """Give up the controller key and stop campaigning (a controlled shutdown); the other
        brokers campaign as soon as they see the key deleted."""
        campaign, self.campaign = self.campaign, False  # before the delete: our own watch sees it
        if not self._term_revision:
            return
        controller_key = layout.key(self.prefix, layout.CONTROLLER_KEY)
        client = self._conn.client()
        tx = client.transactions
        try:
            await _rpc(client.transaction(compare=[tx.create(controller_key) == self._term_revision],
                                          success=[tx.delete(controller_key)], failure=[]))
        except _TRANSIENT as exc:
            self.campaign = campaign
            await self._conn.reset(client)
            raise MetadataQuorumError(ErrorCode.request_timed_out, f"could not resign: {exc}") from None
        self._term_revision = 0  # resigned (or deposed already): no write of this term may follow
        self._update_controller_state()

    def _update_controller_state(self) -> None:
        mine = (self._term_revision != 0 and self._controller_create_revision == self._term_revision
                and self._controller_lease == self._lease_id)
        self._set_controller(mine and self._lease_fresh() and self._synced and self.fatal_error is None
                             and not self._closing)

    @property
    def is_controller(self) -> bool:
        """True while this broker holds the controller key of its term, with a lease renewed within
        the TTL. Checked live, so it turns False the moment the lease goes stale, even before the
        listeners hear it (at the next keepalive round)."""
        return self._controller_flag and self._lease_fresh()

    def _set_controller(self, value: bool) -> None:
        if value == self._controller_flag:
            return
        self._controller_flag = value
        log.info("broker %d %s controller (epoch %d)", self.node_id, "is now" if value else "is no longer",
                 self.controller_epoch)
        for listener in list(self.controller_listeners):
            try:
                listener(value)
            except Exception:
                log.exception("controller listener failed")

    # -- appending -------------------------------------------------------------------------------
    async def append(self, records: Iterable[MetadataRecord]) -> int:
        """Append `records` as the next log entry, if this broker is still the controller; returns
        the entry's sequence once the image includes it (listeners called).

        Raises InvalidMetadataRecord (nothing written) when a record cannot apply, ValueError when
        the entry exceeds MAX_VALUE_BYTES, and MetadataQuorumError: NOT_CONTROLLER (`deposed`
        True) when etcd refuses the write because another controller holds the key (or none
        does), NOT_CONTROLLER (`deposed` False) when this image lags the log (retry after
        the watch caught up), REQUEST_TIMED_OUT when etcd is unreachable (the entry may then
        have been written; the watch applies it if so).
        """
        records = list(records)
        if not records:
            return self.applied_sequence
        if not self._term_revision:
            raise MetadataQuorumError(ErrorCode.not_controller, f"broker {self.node_id} was never elected controller",
                                      deposed=True)
        if self.fatal_error is not None:
            raise MetadataQuorumError(ErrorCode.unknown_server_error, f"metadata store failed: {self.fatal_error}")
        base = self.image
        sequence = self.applied_sequence + 1
        new_image = base.copy()
        changes = [new_image.apply(record) for record in records]
        value = layout.encode_records(records)
        if len(value) > layout.MAX_VALUE_BYTES:
            raise ValueError(f"metadata append of {len(value)} bytes exceeds {layout.MAX_VALUE_BYTES}")
        await self._controller_put(layout.log_key(self.prefix, sequence), value, expect_absent=True)
        # Publish now unless the watch already did: the entry is ours, and the next one in order.
        if self.applied_sequence == sequence - 1 and self.image is base:
            self._publish(new_image, changes, sequence)
        elif self.applied_sequence < sequence:
            try:
                await self.wait_for_sequence(sequence, self._conn.rpc_timeout_s)
            except TimeoutError:
                raise MetadataQuorumError(ErrorCode.request_timed_out,
                                          f"entry {sequence} is written but not yet applied here") from None
        if (self.snapshot_after_entries and sequence - self._snapshot_sequence >= self.snapshot_after_entries
                and (self._compaction is None or self._compaction.done())):
            self._compaction = asyncio.get_running_loop().create_task(self._compact_quietly())
        return sequence

    async def _controller_put(self, key: bytes, value: bytes, *, expect_absent: bool = False,
                              extra_compare=(), extra_success=()) -> None:
        """One compare-and-swap write guarded by this broker's controller term."""
        if not self._term_revision:  # create_revision 0 would match an absent controller key
            raise MetadataQuorumError(ErrorCode.not_controller, f"broker {self.node_id} was never elected controller",
                                      deposed=True)
        controller_key = layout.key(self.prefix, layout.CONTROLLER_KEY)
        client = self._conn.client()
        tx = client.transactions
        compare = [tx.create(controller_key) == self._term_revision, *extra_compare]
        if expect_absent:
            compare.append(tx.create(key) == 0)
        try:
            ok, responses = await _rpc(client.transaction(
                compare=compare, success=[tx.put(key, value), *extra_success], failure=[tx.get(controller_key)]))
        except _TRANSIENT as exc:
            await self._conn.reset(client)
            raise MetadataQuorumError(ErrorCode.request_timed_out, f"etcd unreachable: {exc}") from None
        if ok:
            return
        holder = responses[0][0][1] if responses and responses[0] else None
        if holder is None or holder.create_revision != self._term_revision:
            self._update_controller_state()
            raise MetadataQuorumError(ErrorCode.not_controller,
                                      f"broker {self.node_id} is no longer the controller", deposed=True)
        raise MetadataQuorumError(ErrorCode.not_controller,
                                  f"the metadata log moved past entry {self.applied_sequence} of this image")

    async def compact(self) -> int:
        """Write a snapshot of the image (controller only) and delete the log entries it folds.
        Returns the snapshot's sequence. Raises MetadataQuorumError as `append` does."""
        sequence = self.applied_sequence
        if sequence <= self._snapshot_sequence:
            return self._snapshot_sequence
        payload = layout.encode_records(self.image.to_records())
        chunks = [payload[i:i + layout.MAX_VALUE_BYTES] for i in range(0, len(payload), layout.MAX_VALUE_BYTES)]
        if len(chunks) > layout.MAX_SNAPSHOT_CHUNKS:
            raise ValueError(f"metadata snapshot of {len(payload)} bytes exceeds the bound")
        for index, chunk in enumerate(chunks[:-1]):
            await self._controller_put(layout.snapshot_chunk_key(self.prefix, sequence, index), chunk)
        descriptor = SnapshotDescriptor(sequence, len(chunks), len(payload), crc32c.crc32c(payload))
        tx = aetcd.Transactions()
        snapshot_key = layout.key(self.prefix, layout.SNAPSHOT_KEY)
        log_start = layout.log_key(self.prefix, 0)
        chunks_start = f"{self.prefix}{layout.SNAPSHOTS_DIR}".encode("ascii")
        # The last chunk, the descriptor, and the deletion of what the snapshot replaces, at once.
        await self._controller_put(
            layout.snapshot_chunk_key(self.prefix, sequence, len(chunks) - 1), chunks[-1],
            extra_compare=[tx.mod(snapshot_key) == self._snapshot_mod_revision],
            extra_success=[tx.put(snapshot_key, descriptor.encode()),
                           tx.delete(log_start, range_end=layout.log_key(self.prefix, sequence + 1)),
                           tx.delete(chunks_start, range_end=layout.snapshot_chunks_prefix(self.prefix, sequence))])
        log.info("metadata snapshot at entry %d: %d bytes in %d chunks", sequence, len(payload), len(chunks))
        return sequence

    async def _compact_quietly(self) -> None:
        try:
            await self.compact()
        except (MetadataQuorumError, ValueError) as exc:
            log.warning("metadata snapshot not written: %s", exc)

    # -- watching and applying -------------------------------------------------------------------
    def _publish(self, new_image: MetadataImage, changes: list[Change], sequence: int) -> None:
        old_image, self.image = self.image, new_image
        self.applied_sequence = sequence
        self._applied_event.set()
        self._applied_event = asyncio.Event()
        for listener in list(self.listeners):
            try:
                listener(old_image, new_image, changes)
            except Exception:
                log.exception("metadata listener failed")

    def _apply_entry(self, sequence: int, value: bytes) -> None:
        """Apply log entry `sequence` (the next one) to a copy of the image and publish it."""
        assert sequence == self.applied_sequence + 1, (sequence, self.applied_sequence)
        try:
            layout.check_size(f"log entry {sequence}", value)
            records = layout.decode_records(value)
            new_image = self.image.copy()
            changes = [new_image.apply(record) for record in records]
        except (LayoutError, InvalidMetadataRecord) as exc:
            raise _Fatal(f"metadata log entry {sequence} cannot be applied: {exc}") from None
        self._publish(new_image, changes, sequence)

    async def _watch_loop(self) -> None:
        backoff = _Backoff()
        while not self._closing:
            client = self._conn.client()
            try:
                revision = await self._resync(client)
                watch = await _rpc(client.watch_prefix(self.prefix.encode("ascii"), start_revision=revision + 1))
                backoff.reset()
                try:
                    async for event in watch:
                        self._on_event(event)
                finally:
                    try:
                        await watch.cancel()
                    except _TRANSIENT:
                        log.debug("cancelling a broken watch failed", exc_info=True)
                log.info("metadata watch ended; re-reading from entry %d", self.applied_sequence)
            except _ResyncNeeded:
                continue
            except _Fatal as exc:
                self.fatal_error = exc
                log.critical("%s; this broker stops applying metadata", exc)
                self._synced_event.set()
                self._update_controller_state()
                return
            except aetcd.RevisionCompactedError:
                continue  # the resync reads current state
            except _TRANSIENT as exc:
                log.info("metadata watch failed (%s); reconnecting", exc)
                await self._conn.reset(client)
            if not self._closing:
                await asyncio.sleep(backoff.next_delay_s())

    async def _range(self, client: aetcd.Client, start: bytes, end: bytes, revision: int):
        """Every kv in [start, end) at `revision`, in key order, read in pages."""
        from aetcd import rpc
        total = 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=RANGE_PAGE_KEYS, revision=revision)
            try:
                response = await _rpc(client.kvstub.Range(request, timeout=self._conn.rpc_timeout_s,
                                                     metadata=client.metadata))
            except rpc.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    raise aetcd.RevisionCompactedError(0) from None
                raise
            for kv in response.kvs:
                layout.check_size(kv.key.decode("ascii", "replace"), kv.value)
                total += len(kv.value)
                if total > MAX_RESYNC_BYTES:
                    raise _Fatal(f"metadata under {self.prefix} exceeds {MAX_RESYNC_BYTES} bytes")
                yield kv
            if not response.more or not response.kvs:
                return
            start = response.kvs[-1].key + b"\0"

    async def _resync(self, client: aetcd.Client) -> int:
        """Bring the store up to date at one etcd revision R; returns R (watch from R+1)."""
        await _rpc(client.connect())
        snapshot_key = layout.key(self.prefix, layout.SNAPSHOT_KEY)
        response = await _rpc(client.kvstub.Range(aetcd.rpc.RangeRequest(key=snapshot_key),
                                             timeout=self._conn.rpc_timeout_s, metadata=client.metadata))
        revision = response.header.revision
        if response.kvs:
            kv = response.kvs[0]
            try:
                descriptor = SnapshotDescriptor.decode(kv.value)
            except LayoutError as exc:
                raise _Fatal(str(exc)) from None
            self._snapshot_mod_revision = kv.mod_revision
            self._snapshot_sequence = descriptor.sequence
            if descriptor.sequence > self.applied_sequence:
                await self._load_snapshot(client, descriptor, revision)
        else:
            self._snapshot_mod_revision = 0
        # Log entries after the last applied one.
        log_end = layout.prefix_range_end(f"{self.prefix}{layout.LOG_DIR}".encode("ascii"))
        async for kv in self._range(client, layout.log_key(self.prefix, self.applied_sequence + 1), log_end, revision):
            name = kv.key.decode("ascii")[len(self.prefix):]
            try:
                sequence = layout.parse_sequence(name)
            except LayoutError as exc:
                raise _Fatal(str(exc)) from None
            if sequence <= self.applied_sequence:
                continue  # published by our own append while this read was in flight
            if sequence != self.applied_sequence + 1:
                raise _Fatal(f"metadata log has a gap: entry {sequence} after {self.applied_sequence}")
            self._apply_entry(sequence, kv.value)
        # Live brokers.
        brokers_start = f"{self.prefix}{layout.BROKERS_DIR}".encode("ascii")
        live: dict[int, LiveBroker] = {}
        async for kv in self._range(client, brokers_start, layout.prefix_range_end(brokers_start), revision):
            broker = self._decode_broker(kv.key, kv.value)
            if broker is not None and len(live) < MAX_LIVE_BROKERS:
                live[broker.node_id] = broker
        self._set_live_brokers(live)
        # The controller.
        controller_key = layout.key(self.prefix, layout.CONTROLLER_KEY)
        controller = None
        async for kv in self._range(client, controller_key, controller_key + b"\0", revision):
            controller = kv
        self._on_controller(controller)
        self._synced = True
        self._synced_event.set()
        self._update_controller_state()
        return revision

    async def _load_snapshot(self, client: aetcd.Client, descriptor: SnapshotDescriptor, revision: int) -> None:
        start = layout.snapshot_chunks_prefix(self.prefix, descriptor.sequence)
        parts = [kv.value async for kv in self._range(client, start, layout.prefix_range_end(start), revision)]
        payload = b"".join(parts)
        if len(parts) != descriptor.chunks or len(payload) != descriptor.size_bytes \
                or crc32c.crc32c(payload) != descriptor.crc32c:
            raise _Fatal(f"metadata snapshot {descriptor.sequence} does not match its descriptor")
        try:
            records = layout.decode_records(payload)
            image = MetadataImage(cluster_id=self.cluster_id)
            for record in records:
                image.apply(record)
        except (LayoutError, InvalidMetadataRecord) as exc:
            raise _Fatal(f"metadata snapshot {descriptor.sequence} cannot be applied: {exc}") from None
        if descriptor.sequence <= self.applied_sequence:
            return  # our own appends overtook it while the chunks were read
        log.info("loaded metadata snapshot at entry %d (%d records)", descriptor.sequence, len(records))
        self._publish(image, image_changes(self.image, image), descriptor.sequence)

    def _on_event(self, event) -> None:
        name = event.kv.key.decode("ascii", "replace")[len(self.prefix):]
        put = event.kind == aetcd.EventKind.PUT
        if name.startswith(layout.LOG_DIR):
            if not put:
                return  # entries folded into a snapshot are deleted
            try:
                sequence = layout.parse_sequence(name)
            except LayoutError as exc:
                raise _Fatal(str(exc)) from None
            if sequence <= self.applied_sequence:
                return  # applied already (our own append, or read by the resync)
            if sequence != self.applied_sequence + 1:
                raise _ResyncNeeded()
            self._apply_entry(sequence, event.kv.value)
        elif name == layout.SNAPSHOT_KEY:
            if put:
                try:
                    descriptor = SnapshotDescriptor.decode(event.kv.value)
                except LayoutError as exc:
                    raise _Fatal(str(exc)) from None
                self._snapshot_mod_revision = event.kv.mod_revision
                self._snapshot_sequence = descriptor.sequence
                if descriptor.sequence > self.applied_sequence:
                    raise _ResyncNeeded()
        elif name.startswith(layout.BROKERS_DIR):
            live = dict(self.live_brokers)
            if put:
                broker = self._decode_broker(event.kv.key, event.kv.value)
                if broker is None or (broker.node_id not in live and len(live) >= MAX_LIVE_BROKERS):
                    return
                live[broker.node_id] = broker
            else:
                node = name[len(layout.BROKERS_DIR):]
                if not node.lstrip("-").isdigit():
                    return
                live.pop(int(node), None)
            self._set_live_brokers(live)
        elif name == layout.CONTROLLER_KEY:
            self._on_controller(event.kv if put else None)
            self._update_controller_state()

    def _decode_broker(self, key: bytes, value: bytes) -> LiveBroker | None:
        try:
            broker = LiveBroker.decode(value)
        except LayoutError as exc:
            log.warning("ignoring broker registration %r: %s", key, exc)
            return None
        if layout.broker_key(self.prefix, broker.node_id) != key:
            log.warning("ignoring broker registration %r: it names node %d", key, broker.node_id)
            return None
        return broker

    def _set_live_brokers(self, live: dict[int, LiveBroker]) -> None:
        if live == self.live_brokers:
            return
        old, self.live_brokers = self.live_brokers, live
        for listener in list(self.broker_listeners):
            try:
                listener(old, live)
            except Exception:
                log.exception("broker listener failed")

    def _on_controller(self, kv) -> None:
        if kv is None:
            self._controller_create_revision = 0
            self._controller_lease = 0
            self.controller_id = None
            self._election_wakeup.set()
            return
        try:
            claim = ControllerClaim.decode(kv.value)
        except LayoutError as exc:
            log.warning("unreadable controller key: %s", exc)
            claim = ControllerClaim(-1, "", 0)
        self._controller_create_revision = kv.create_revision
        self._controller_lease = kv.lease
        self.controller_id = claim.node_id
        self.controller_epoch = claim.epoch


__all__ = [
    "BrokerEndpoint",
    "EtcdMetadataStore",
    "LiveBroker",
    "MetadataQuorumError",
    "image_changes",
    "parse_etcd_url",
]
