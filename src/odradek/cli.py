"""The `odradek` command line: run a broker, manage topics, produce and consume.

    odradek serve [--config server.properties] [--listeners L] [--log-dirs DIR] [--node-id N]
                  [--metadata etcd://host:port[,host:port]] [--override key=value ...]
    odradek topics create NAME [--partitions N] [--replication-factor R] [--config k=v ...]
    odradek topics list | describe [NAME] | delete NAME
    odradek produce TOPIC [--key-separator SEP] [--partition N] [--compression C] [--acks A]
    odradek groups list | describe GROUP | delete GROUP | reset-offsets GROUP --topic T --to-...
    odradek transactions list | describe | describe-producers | abort   (see cli_transactions.py)
    odradek cluster status | reassign | elect-leaders                    (see cli_cluster.py)
    odradek consume TOPIC [--from-beginning | --offset N | --timestamp MS] [--partition N]
                          [--max-messages N] [--timeout-ms T] [--format FMT] [--property k=v]

Every client command takes `--bootstrap-server host:port` (default 127.0.0.1:9092). Only
argparse is imported at start, so `odradek --help` is fast; the client, kio and the broker are
imported by the command that needs them.

Exit codes: 0 success, 1 a runtime error (cannot connect, topic exists, unknown topic ...),
2 a usage error. Errors are one line on stderr, `odradek: <what went wrong>`, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Protocol

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PRODUCE_BATCH_SIZE_BYTES = 16 * 1024  # batch.size: a batch is sent when it reaches this size
PRODUCE_LINGER_MS = 100  # linger.ms: a partial batch waits at most this for more lines
PRODUCE_MAX_LINE_BYTES = 1024 * 1024  # message.max.bytes: a longer line is refused
STDIN_READ_BYTES = 64 * 1024
STDIN_QUEUED_CHUNKS = 4
CONSUME_MAX_WAIT_MS = 500  # fetch.max.wait.ms
METADATA_RETRIES = 10  # while a just-created topic has no leader yet
METADATA_RETRY_BACKOFF_MS = 100
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1 (or `exit_code`)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OffsetCommitter(Protocol):
    """The hook for `consume --group`: where a consumer group starts and what it has read.

    The consume loop calls `starting_offsets` once (partitions it leaves out start as the flags
    say) and `commit` after each fetch's records are printed. `cli_groups.GroupOffsets` is the
    implementation.
    """

    async def starting_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]: ...

    async def commit(self, topic: str, offsets: dict[int, int]) -> None: ...


# -- argument parsing ----------------------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0")
    return value


def _acks(text: str) -> int:
    mapping = {"all": -1, "-1": -1, "0": 0, "1": 1}
    if text.lower() not in mapping:
        raise argparse.ArgumentTypeError(f"acks must be all, -1, 0 or 1, not {text!r}")
    return mapping[text.lower()]


def _offset(text: str) -> int | str:
    if text in ("earliest", "latest"):
        return text
    return _non_negative(text)


def _add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-server",
        default=DEFAULT_BOOTSTRAP,
        metavar="HOST:PORT",
        help=f"broker to connect to, comma-separated for several (default {DEFAULT_BOOTSTRAP})",
    )


def build_parser() -> argparse.ArgumentParser:
    from odradek import __version__

    parser = argparse.ArgumentParser(
        prog="odradek",
        description="An event streaming platform that speaks the Apache Kafka protocol.",
    )
    parser.add_argument("--version", action="version", version=f"odradek {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser(
        "serve",
        help="run a broker",
        description="Run a broker until "
        "SIGTERM or Ctrl-C. Options override the config file's keys.",
    )
    serve.add_argument("--config", metavar="FILE", help="a Kafka server.properties file")
    serve.add_argument(
        "--listeners", help="e.g. PLAINTEXT://127.0.0.1:9092 (port 0 picks a free one)"
    )
    serve.add_argument("--log-dirs", metavar="DIR", help="data directory (log.dirs)")
    serve.add_argument("--node-id", type=_non_negative, metavar="N", help="node.id")
    serve.add_argument("--metadata", metavar="etcd://HOST:PORT[,HOST:PORT]",
                       help="cluster mode: the etcd metadata quorum (metadata.quorum)")
    serve.add_argument(
        "--override",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any Kafka broker config, repeatable (e.g. num.partitions=3)",
    )

    topics = commands.add_parser("topics", help="create, list, describe and delete topics")
    topic_commands = topics.add_subparsers(dest="topics_command", metavar="ACTION")
    topic_commands.required = True
    create = topic_commands.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument(
        "--partitions",
        type=_positive,
        default=None,
        metavar="N",
        help="number of partitions (default: the broker's num.partitions)",
    )
    create.add_argument(
        "--replication-factor",
        type=_positive,
        default=None,
        metavar="R",
        help="replicas per partition (default: the broker's default.replication.factor)",
    )
    create.add_argument(
        "--config",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic config, repeatable (e.g. cleanup.policy=compact)",
    )
    create.add_argument("--if-not-exists", action="store_true", help="succeed if the topic exists")
    _add_bootstrap(create)
    listing = topic_commands.add_parser("list", help="list topic names")
    _add_bootstrap(listing)
    describe = topic_commands.add_parser(
        "describe", help="partitions, leaders, replicas, ISR and configs"
    )
    describe.add_argument("name", nargs="?", help="one topic (default: all topics)")
    _add_bootstrap(describe)
    delete = topic_commands.add_parser("delete", help="delete a topic")
    delete.add_argument("name")
    delete.add_argument(
        "--if-exists", action="store_true", help="succeed if the topic does not exist"
    )
    _add_bootstrap(delete)

    produce = commands.add_parser(
        "produce",
        help="send the lines of stdin as records",
        description="Each line of stdin becomes one record. Keyed records "
        "are partitioned with murmur2 exactly as Kafka's default partitioner; "
        "keyless ones round-robin by batch.",
    )
    produce.add_argument("topic")
    produce.add_argument(
        "--key-separator", metavar="SEP", help="split each line at the first SEP into key and value"
    )
    produce.add_argument(
        "--partition", type=_non_negative, metavar="N", help="send every record to partition N"
    )
    produce.add_argument("--compression", choices=COMPRESSIONS, default="none")
    produce.add_argument(
        "--acks",
        type=_acks,
        default=-1,
        metavar="all|1|0",
        help="acknowledgements to wait for (default all)",
    )
    produce.add_argument(
        "--batch-size",
        type=_positive,
        default=PRODUCE_BATCH_SIZE_BYTES,
        metavar="BYTES",
        help=f"bytes of records per batch (default {PRODUCE_BATCH_SIZE_BYTES})",
    )
    produce.add_argument(
        "--linger-ms",
        type=_non_negative,
        default=PRODUCE_LINGER_MS,
        metavar="MS",
        help=f"how long a partial batch waits for more lines (default {PRODUCE_LINGER_MS})",
    )
    produce.add_argument("--verbose", "-v", action="store_true", help="report each batch on stderr")
    _add_bootstrap(produce)

    consume = commands.add_parser(
        "consume",
        help="print records of a topic",
        description="Print records, by default only new ones, value only. "
        "Format directives: %%t topic, %%p partition, %%o offset, %%k key, "
        "%%v value, %%T timestamp ms, %%h headers, %%K key length, %%S value "
        "length, %%%% a percent sign; \\n \\t escapes.",
    )
    consume.add_argument("topic")
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    start.add_argument(
        "--offset",
        type=_offset,
        metavar="N|earliest|latest",
        help="start at this offset (needs --partition unless earliest/latest)",
    )
    start.add_argument(
        "--timestamp",
        type=_non_negative,
        metavar="MS",
        help="start at the first record with a timestamp >= MS (epoch milliseconds)",
    )
    consume.add_argument(
        "--partition", type=_non_negative, metavar="N", help="read only partition N"
    )
    consume.add_argument("--max-messages", type=_positive, metavar="N", help="exit after N records")
    consume.add_argument(
        "--timeout-ms", type=_positive, metavar="T", help="exit when no record arrives for T ms"
    )
    consume.add_argument("--format", metavar="FMT", help="output format per record (default: %%v)")
    consume.add_argument(
        "--property",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Kafka console consumer formatter properties: print.key, print.partition, "
        "print.offset, print.timestamp, print.headers, key.separator, null.literal",
    )
    consume.add_argument(
        "--group",
        metavar="G",
        help="start at group G's committed offsets (the start flags apply to partitions without "
        "one) and commit what is printed; reads every partition, without joining as a member",
    )
    consume.add_argument(
        "--isolation-level",
        choices=("read_uncommitted", "read_committed"),
        default="read_uncommitted",
    )
    _add_bootstrap(consume)
    from odradek import cli_groups  # `odradek groups ...` (issue #3)

    cli_groups.add_parser(commands, _add_bootstrap)
    from odradek import cli_configs  # `odradek configs ...` (issue #4)

    cli_configs.add_parser(commands, _add_bootstrap)
    from odradek import cli_transactions  # `odradek transactions ...` (issue #8)

    cli_transactions.add_parser(commands, _add_bootstrap)
    from odradek import cli_cluster  # `odradek cluster ...` (issue #7)

    cli_cluster.add_parser(commands, _add_bootstrap)
    return parser


# -- serve ---------------------------------------------------------------------------------------


def serve_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Kafka config names from the serve flags: `--override` pairs, then the named flags (which win)."""
    overrides = dict(args.override)
    if args.listeners is not None:
        overrides["listeners"] = args.listeners
    if args.log_dirs is not None:
        overrides["log.dirs"] = args.log_dirs
    if args.node_id is not None:
        overrides["node.id"] = str(args.node_id)
    if args.metadata is not None:
        overrides["metadata.quorum"] = args.metadata
    return overrides


def _serve(args: argparse.Namespace) -> int:
    # kio registers hypothesis strategies for its types whenever hypothesis is importable (as it
    # is in a test environment), which costs ~150 ms of start-up; a broker process never needs it.
    sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]
    try:
        from odradek.broker.server import serve
    except ImportError as exc:
        raise CliError(f"the broker is not available in this installation: {exc}") from None
    return serve(args.config, serve_overrides(args))


# -- client commands -----------------------------------------------------------------------------


# After Ctrl-C, the command's task is cancelled again this often until it ends: one
# cancellation lost inside a library's cleanup must not leave `consume` running.
INTERRUPT_RETRY_S = 1.0


def _run(coroutine_function, args: argparse.Namespace) -> int:
    import asyncio
    import signal

    interrupted = []

    def interrupt(task: asyncio.Task) -> None:
        interrupted.append(True)
        if not task.done():
            task.cancel()
            asyncio.get_running_loop().call_later(INTERRUPT_RETRY_S, interrupt, task)

    async def with_client():
        from odradek.client.client import Client

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, interrupt, asyncio.current_task())
        client = Client(args.bootstrap_server, client_id="odradek-cli")
        try:
            await client.connect()
            return await coroutine_function(client, args)
        finally:
            await client.close()
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(with_client())
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None  # main() answers 130, as for Ctrl-C anywhere else
        raise


async def _topics_create(client, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaError
    from odradek.protocol.errors import ErrorCode

    try:
        await client.create_topic(
            args.name, args.partitions or -1, args.replication_factor or -1, dict(args.config)
        )
    except KafkaError as exc:
        if exc.error_code == ErrorCode.topic_already_exists and args.if_not_exists:
            return EXIT_OK
        raise
    print(f"Created topic {args.name}.")
    return EXIT_OK


async def _topics_list(client, args: argparse.Namespace) -> int:
    metadata = await client.metadata()
    for name in sorted(metadata.topics):
        print(name)
    return EXIT_OK


async def _topics_describe(client, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaClientError, KafkaError
    from odradek.protocol.errors import ErrorCode

    metadata = await client.metadata([args.name] if args.name else None)
    if args.name:
        topic = metadata.topics.get(args.name)
        if topic is None or topic.error_code == ErrorCode.unknown_topic_or_partition:
            raise CliError(f"topic {args.name!r} does not exist")
    lines = []
    configs_unavailable = None
    for name in sorted(metadata.topics):
        topic = metadata.topics[name]
        if topic.error_code != ErrorCode.none:
            lines.append(f"Topic: {name}\tError: {topic.error_code.name.upper()}")
            continue
        configs = ""
        if configs_unavailable is None:
            try:
                entries = await client.describe_topic_configs(name)
                configs = ",".join(
                    f"{e.name}={'(sensitive)' if e.is_sensitive else e.value}"
                    for e in entries
                    if not e.is_default
                )
            except KafkaError as exc:
                configs = f"(unavailable: {exc})"
            except KafkaClientError as exc:  # an old broker or a closed connection: stop asking
                configs_unavailable = f"(unavailable: {exc})"
        configs = configs_unavailable or configs
        replication_factor = len(topic.partitions[0].replicas) if topic.partitions else 0
        topic_id = topic.topic_id if topic.topic_id is not None else ""
        lines.append(
            f"Topic: {name}\tTopicId: {topic_id}\tPartitionCount: {len(topic.partitions)}\t"
            f"ReplicationFactor: {replication_factor}\tConfigs: {configs}"
        )
        for p in topic.partitions:
            leader = p.leader_id if p.leader_id >= 0 else "none"
            line = (
                f"\tTopic: {name}\tPartition: {p.partition}\tLeader: {leader}\t"
                f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}"
            )
            if p.error_code != ErrorCode.none:
                line += f"\tError: {p.error_code.name.upper()}"
            lines.append(line)
    if lines:
        print("\n".join(lines))
    return EXIT_OK


async def _topics_delete(client, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaError
    from odradek.protocol.errors import ErrorCode

    try:
        await client.delete_topic(args.name)
    except KafkaError as exc:
        if exc.error_code == ErrorCode.unknown_topic_or_partition and args.if_exists:
            return EXIT_OK
        raise
    return EXIT_OK


async def _topic_partitions(client, topic: str, *, allow_auto_topic_creation: bool) -> list[int]:
    """Partition ids of a topic, waiting briefly while a new topic gets its leaders."""
    import asyncio

    from odradek.protocol.errors import ErrorCode

    retriable = (ErrorCode.leader_not_available, ErrorCode.unknown_topic_or_partition)
    for attempt in range(METADATA_RETRIES):
        metadata = await client.metadata(
            [topic], allow_auto_topic_creation=allow_auto_topic_creation
        )
        info = metadata.topics.get(topic)
        error = info.error_code if info is not None else ErrorCode.unknown_topic_or_partition
        leaderless = info is not None and any(p.leader_id < 0 for p in info.partitions)
        if error == ErrorCode.none and info.partitions and not leaderless:
            return [p.partition for p in info.partitions]
        if error == ErrorCode.unknown_topic_or_partition and not allow_auto_topic_creation:
            break
        if error not in retriable and error != ErrorCode.none:
            raise CliError(f"topic {topic!r}: {error.name.upper()}")
        await asyncio.sleep(METADATA_RETRY_BACKOFF_MS / 1000)
    if error == ErrorCode.unknown_topic_or_partition:
        raise CliError(f"topic {topic!r} does not exist")
    raise CliError(f"topic {topic!r} has no leader for some partitions ({error.name.upper()})")


class LineBatcher:
    """Turns stdin lines into per-partition batches of (key, value, headers, timestamp_ms).

    Holds the pending records and their byte count per partition, and the unterminated tail of
    the last chunk read. A partition's batch is ready when its records reach `batch_size_bytes`;
    `drain()` hands out every pending batch. Pure: no I/O, the caller feeds bytes and sends.
    """

    def __init__(
        self,
        partitions: list[int],
        *,
        key_separator: bytes | None,
        fixed_partition: int | None,
        batch_size_bytes: int,
        max_line_bytes: int = PRODUCE_MAX_LINE_BYTES,
        topic: str = "",
        clock_ms=None,
    ) -> None:
        from odradek.client.partitioner import RoundRobinPartitioner

        if fixed_partition is not None and fixed_partition not in partitions:
            raise CliError(
                f"partition {fixed_partition} does not exist: topic {topic!r} has "
                f"{len(partitions)} partitions"
            )
        self.partitions = partitions
        self.key_separator = key_separator
        self.fixed_partition = fixed_partition
        self.batch_size_bytes = batch_size_bytes
        self.max_line_bytes = max_line_bytes
        self.topic = topic
        self._partitioner = RoundRobinPartitioner()
        self._keyless_partition: int | None = None
        self._pending: dict[int, list[tuple]] = {}
        self._pending_bytes: dict[int, int] = {}
        self._tail = bytearray()
        self.line_number = 0
        if clock_ms is None:
            import time

            def clock_ms() -> int:
                return int(time.time() * 1000)

        self._clock_ms = clock_ms

    def feed(self, chunk: bytes) -> list[tuple[int, list[tuple]]]:
        """Add bytes read from stdin; returns the batches that became full."""
        self._tail += chunk
        *lines, rest = self._tail.split(b"\n")
        if len(rest) > self.max_line_bytes:
            raise CliError(
                f"line {self.line_number + len(lines) + 1} is longer than {self.max_line_bytes} bytes"
            )
        self._tail = bytearray(rest)
        ready = []
        for line in lines:
            full = self._add(bytes(line))
            if full is not None:
                ready.append(full)
        return ready

    def finish(self) -> list[tuple[int, list[tuple]]]:
        """End of input: the unterminated last line (if any) and every pending batch."""
        if self._tail:
            self._add(bytes(self._tail))
            self._tail = bytearray()
        return self.drain()

    def drain(self) -> list[tuple[int, list[tuple]]]:
        ready = [(p, records) for p, records in self._pending.items() if records]
        self._pending = {}
        self._pending_bytes = {}
        self._keyless_partition = None
        return ready

    def _add(self, line: bytes) -> tuple[int, list[tuple]] | None:
        self.line_number += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_bytes:
            raise CliError(f"line {self.line_number} is longer than {self.max_line_bytes} bytes")
        key = None
        value = line
        if self.key_separator is not None:
            key, separator, value = line.partition(self.key_separator)
            if not separator:
                raise CliError(
                    f"line {self.line_number} has no key separator "
                    f"{self.key_separator.decode(errors='replace')!r}"
                )
        if self.fixed_partition is not None:
            partition = self.fixed_partition
        elif key is not None:
            partition = self.partitions[
                self._partitioner.partition(self.topic, key, len(self.partitions))
            ]
        else:
            # Keyless records stick to one partition until its batch is sent, then move on.
            if self._keyless_partition is None:
                self._keyless_partition = self.partitions[
                    self._partitioner.partition(self.topic, None, len(self.partitions))
                ]
            partition = self._keyless_partition
        records = self._pending.setdefault(partition, [])
        records.append((key, value, [], self._clock_ms()))
        size = self._pending_bytes.get(partition, 0) + len(value) + (len(key) if key else 0) + 8
        self._pending_bytes[partition] = size
        if size >= self.batch_size_bytes:
            del self._pending[partition]
            del self._pending_bytes[partition]
            if partition == self._keyless_partition:
                self._keyless_partition = None
            return partition, records
        return None


async def _produce(client, args: argparse.Namespace) -> int:
    import asyncio

    from odradek.protocol.compression import NAMES

    partitions = await _topic_partitions(client, args.topic, allow_auto_topic_creation=True)
    separator = args.key_separator.encode() if args.key_separator is not None else None
    if separator == b"":
        raise CliError("--key-separator must not be empty", EXIT_USAGE)
    batcher = LineBatcher(
        partitions,
        key_separator=separator,
        fixed_partition=args.partition,
        batch_size_bytes=args.batch_size,
        topic=args.topic,
    )
    codec = NAMES[args.compression]
    sent_records = 0

    async def send(batches) -> None:
        nonlocal sent_records
        for partition, records in batches:
            base_offset = await client.produce(
                args.topic, partition, records, compression=codec, acks=args.acks
            )
            sent_records += len(records)
            if args.verbose:
                where = f" at offset {base_offset}" if base_offset is not None else ""
                print(
                    f"sent {len(records)} records to {args.topic}-{partition}{where}",
                    file=sys.stderr,
                )

    chunks = _stdin_chunks(sys.stdin.fileno())
    linger_s = args.linger_ms / 1000
    read = None
    while True:
        if read is None:
            read = asyncio.ensure_future(chunks.get())
        done, _ = await asyncio.wait({read}, timeout=linger_s)
        if not done:  # stdin is quiet: send what has lingered long enough
            await send(batcher.drain())
            await asyncio.wait({read})
        chunk = read.result()
        read = None
        if not chunk:
            break
        await send(batcher.feed(chunk))
    await send(batcher.finish())
    if args.verbose:
        print(f"sent {sent_records} records", file=sys.stderr)
    return EXIT_OK


def _stdin_chunks(fd: int):
    """An asyncio queue of chunks read from `fd` by a daemon thread; b"" marks the end.

    A daemon thread rather than the loop's executor: when the command fails while stdin is an
    idle terminal, the process must exit without waiting for a blocked read. The queue holds at
    most STDIN_QUEUED_CHUNKS chunks, so a slow broker slows the reader instead of filling memory.
    """
    import asyncio
    import os
    import threading

    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(STDIN_QUEUED_CHUNKS)

    def pump() -> None:
        while True:
            try:
                chunk = os.read(fd, STDIN_READ_BYTES)
            except OSError:
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()
            except RuntimeError:  # the loop is gone: the command has ended
                return
            if not chunk:
                return

    threading.Thread(target=pump, name="odradek-stdin", daemon=True).start()
    return chunks


# -- consume -------------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0"}


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def compile_format(fmt: str):
    """A function record, topic, partition -> bytes for a kcat-style format string.

    %t topic, %p partition, %o offset, %k key, %v value, %T timestamp ms, %h headers (k=v,...),
    %K key length, %S value length (-1 for null), %% a percent sign. A newline ends each record
    unless the format already ends with one.
    """
    fmt = _unescape(fmt)
    if not fmt.endswith("\n"):
        fmt += "\n"
    parts: list[Any] = []
    literal = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            directive = fmt[i + 1]
            if directive == "%":
                literal.append("%")
            elif directive in "tpokvThKS":
                if literal:
                    parts.append("".join(literal).encode())
                    literal = []
                parts.append(directive)
            else:
                raise CliError(f"unknown format directive %{directive} in --format", EXIT_USAGE)
            i += 2
            continue
        literal.append(c)
        i += 1
    if literal:
        parts.append("".join(literal).encode())

    def render(record, topic: str, partition: int) -> bytes:
        out = bytearray()
        for part in parts:
            if isinstance(part, bytes):
                out += part
            elif part == "v":
                out += record.value if record.value is not None else b""
            elif part == "k":
                out += record.key if record.key is not None else b""
            elif part == "o":
                out += str(record.offset).encode()
            elif part == "p":
                out += str(partition).encode()
            elif part == "t":
                out += topic.encode()
            elif part == "T":
                out += str(record.timestamp).encode()
            elif part == "K":
                out += str(len(record.key) if record.key is not None else -1).encode()
            elif part == "S":
                out += str(len(record.value) if record.value is not None else -1).encode()
            elif part == "h":
                out += ",".join(
                    f"{k}={(v or b'').decode(errors='replace')}" for k, v in record.headers
                ).encode()
        return bytes(out)

    return render


def properties_formatter(properties: dict[str, str]):
    """Kafka's console consumer DefaultMessageFormatter: optional timestamp, partition, offset,
    headers and key before the value, separated by key.separator (a tab by default)."""

    def flag(name: str) -> bool:
        return properties.get(name, "false").lower() == "true"

    known = {
        "print.key",
        "print.value",
        "print.partition",
        "print.offset",
        "print.timestamp",
        "print.headers",
        "key.separator",
        "line.separator",
        "null.literal",
    }
    unknown = set(properties) - known
    if unknown:
        raise CliError(
            f"unknown --property {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})",
            EXIT_USAGE,
        )
    separator = _unescape(properties.get("key.separator", "\t")).encode()
    line_separator = _unescape(properties.get("line.separator", "\n")).encode()
    null = properties.get("null.literal", "null").encode()
    print_value = properties.get("print.value", "true").lower() == "true"

    def render(record, topic: str, partition: int) -> bytes:
        fields = []
        if flag("print.timestamp"):
            fields.append(f"CreateTime:{record.timestamp}".encode())
        if flag("print.partition"):
            fields.append(f"Partition:{partition}".encode())
        if flag("print.offset"):
            fields.append(f"Offset:{record.offset}".encode())
        if flag("print.headers"):
            fields.append(
                ",".join(
                    f"{k}:{(v.decode(errors='replace') if v is not None else 'null')}"
                    for k, v in record.headers
                ).encode()
                or b"NO_HEADERS"
            )
        if flag("print.key"):
            fields.append(record.key if record.key is not None else null)
        if print_value:
            fields.append(record.value if record.value is not None else null)
        return separator.join(fields) + line_separator

    return render


async def _start_offsets(client, args: argparse.Namespace, partitions: list[int]) -> dict[int, int]:
    from odradek.client.client import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

    if isinstance(args.offset, int):
        return {p: args.offset for p in partitions}
    if args.timestamp is not None:
        offsets = {}
        for p in partitions:
            offset, _ = await client.list_offset(args.topic, p, args.timestamp)
            if offset < 0:  # no record that late: start at the end
                offset, _ = await client.list_offset(args.topic, p, LATEST_TIMESTAMP)
            offsets[p] = offset
        return offsets
    earliest = args.from_beginning or args.offset == "earliest"
    target = EARLIEST_TIMESTAMP if earliest else LATEST_TIMESTAMP
    return {p: (await client.list_offset(args.topic, p, target))[0] for p in partitions}


async def _consume(
    client, args: argparse.Namespace, committer: OffsetCommitter | None = None
) -> int:
    import asyncio
    import time

    from odradek.client.connection import KafkaError
    from odradek.protocol.errors import ErrorCode

    FETCH_RETRIABLE = {
        ErrorCode.not_leader_or_follower,
        ErrorCode.leader_not_available,
        ErrorCode.fenced_leader_epoch,
        ErrorCode.unknown_leader_epoch,
    }

    if args.group is not None and committer is None:
        from odradek.cli_groups import GroupOffsets

        committer = GroupOffsets(client, args.group)
    if isinstance(args.offset, int) and args.partition is None:
        raise CliError("--offset N needs --partition (offsets are per partition)", EXIT_USAGE)
    render = (
        compile_format(args.format)
        if args.format
        else (properties_formatter(dict(args.property)) if args.property else compile_format("%v"))
    )
    partitions = await _topic_partitions(client, args.topic, allow_auto_topic_creation=False)
    if args.partition is not None:
        if args.partition not in partitions:
            raise CliError(
                f"partition {args.partition} does not exist: topic {args.topic!r} has "
                f"{len(partitions)} partitions"
            )
        partitions = [args.partition]
    committed = await committer.starting_offsets(args.topic, partitions) if committer else {}
    offsets = {**await _start_offsets(client, args, [p for p in partitions if p not in committed]),
               **committed}
    out = sys.stdout.buffer
    isolation_level = 1 if args.isolation_level == "read_committed" else 0
    reset = "earliest" if args.from_beginning or args.offset == "earliest" else "latest"
    count = 0
    last_record_s = time.monotonic()
    try:
        while True:
            max_wait_ms = CONSUME_MAX_WAIT_MS
            if args.timeout_ms is not None:
                remaining_ms = args.timeout_ms - (time.monotonic() - last_record_s) * 1000
                if remaining_ms <= 0:
                    break
                max_wait_ms = max(1, min(max_wait_ms, int(remaining_ms)))
            try:
                results = await client.fetch_partitions(
                    args.topic,
                    offsets,
                    max_wait_ms=max_wait_ms,
                    isolation_level=isolation_level,
                    on_out_of_range=reset,
                )
            except KafkaError as exc:
                if exc.error_code not in FETCH_RETRIABLE:
                    raise
                await asyncio.sleep(
                    METADATA_RETRY_BACKOFF_MS / 1000
                )  # leadership moved: refresh, retry
                continue
            printed = False
            for partition, result in results.items():
                if result.reset_from is not None:
                    print(
                        f"odradek: offset {result.reset_from} is out of range for {args.topic}-{partition}; "
                        f"resetting to {reset} ({result.next_offset})",
                        file=sys.stderr,
                    )
                for record in result.records:
                    out.write(render(record, args.topic, partition))
                    count += 1
                    printed = True
                    if args.max_messages is not None and count >= args.max_messages:
                        out.flush()
                        offsets[partition] = record.offset + 1
                        if committer is not None:
                            await committer.commit(args.topic, offsets)
                        return _consumed(count)
                offsets[partition] = result.next_offset
            if printed:
                out.flush()
                last_record_s = time.monotonic()
            if committer is not None and printed:
                await committer.commit(args.topic, offsets)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except asyncio.CancelledError:  # Ctrl-C: `_run` cancels us, then raises KeyboardInterrupt
        out.flush()
        _consumed(count)
        raise
    return _consumed(count)


def _consumed(count: int) -> int:
    print(f"Processed a total of {count} messages", file=sys.stderr)
    return EXIT_OK


def _silence_stdout() -> None:
    # The reader went away (`| head`): point stdout at /dev/null so the interpreter's final
    # flush does not complain.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


# -- main ----------------------------------------------------------------------------------------

_TOPIC_COMMANDS = {
    "create": _topics_create,
    "list": _topics_list,
    "describe": _topics_describe,
    "delete": _topics_delete,
}

# Friendlier words for the error codes a user of these commands meets most.
_FRIENDLY = {
    "topic_already_exists": "already exists",
    "unknown_topic_or_partition": "does not exist",
    "invalid_partitions": "invalid number of partitions",
    "invalid_replication_factor": "invalid replication factor",
    "invalid_topic_exception": "invalid topic name",
    "invalid_config": "invalid config",
    "policy_violation": "refused by the broker's policy",
    "topic_authorization_failed": "not authorized",
}


def describe_error(exc: BaseException) -> str:
    """One line for a client-side exception."""
    from odradek.client.connection import KafkaError

    if isinstance(exc, KafkaError):
        # "<context>: <broker's message, or our words, or the code> (<CODE>)"
        code = exc.error_code.name
        words = exc.message or _FRIENDLY.get(code)
        text = f"{words} ({code.upper()})" if words else code.upper()
        return f"{exc.context}: {text}" if exc.context else text
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        from odradek.client.connection import KafkaClientError

        try:
            if args.command == "topics":
                return _run(_TOPIC_COMMANDS[args.topics_command], args)
            if args.command == "produce":
                return _run(_produce, args)
            if args.command == "consume":
                return _run(_consume, args)
            if args.command == "groups":
                from odradek import cli_groups

                return _run(cli_groups.run, args)
            if args.command == "configs":
                from odradek import cli_configs

                return _run(cli_configs.run, args)
            if args.command == "transactions":
                from odradek import cli_transactions

                return _run(cli_transactions.run, args)
            if args.command == "cluster":
                from odradek import cli_cluster

                return _run(cli_cluster.run, args)
        except KafkaClientError as exc:
            print(f"odradek: {describe_error(exc)}", file=sys.stderr)
            return EXIT_ERROR
        parser.error(f"unknown command {args.command}")
    except CliError as exc:
        print(f"odradek: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
