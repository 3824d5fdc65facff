"""Broker and topic configuration, with Kafka's names, defaults, precedence and validation.

Two tables hold every definition, one row per config, so that parsing, validation, defaults,
DescribeConfigs and the storage view (`LogConfig`) all read the same facts:

    BROKER_CONFIGS  Kafka broker config name -> BrokerConfigDef (type, default, validator, doc)
    TOPIC_CONFIGS   Kafka topic config name  -> TopicConfigDef (type, default, broker synonyms,
                    validator, valid values, doc)

`BrokerConfig` is the typed, immutable result of loading a `server.properties` file plus command
line overrides (`BrokerConfig.load`). Field names are Kafka's names with dots replaced by
underscores (`log.segment.bytes` -> `log_segment_bytes`). Keys Odradek does not implement are
ignored with one warning each, as Kafka does; invalid values of keys it does implement raise
`ConfigError` with one line naming the key, in Kafka's words
(`Invalid value abc for configuration num.partitions: Not a number of type INT`).

Defaults are Kafka 4's except where a single small node needs another, each marked ODRADEK below:
  log.dirs                             ./odradek-data   (Kafka: /tmp/kafka-logs)
  node.id                              1                (Kafka: required)
  listeners                            PLAINTEXT://127.0.0.1:9092 (Kafka: PLAINTEXT://:9092)
  offsets.topic.replication.factor     1                (Kafka: 3, impossible on one node)
  transaction.state.log.replication.factor 1            (Kafka: 3)
  transaction.state.log.min.isr        1                (Kafka: 2)
  cluster.id                           (Odradek extension) fixes the cluster id; otherwise one is
                                       generated on first start and kept in meta.properties.

Precedence as in Kafka: `log.dirs` over `log.dir`; `log.roll.ms` over `log.roll.hours`;
`log.roll.jitter.ms` over `log.roll.jitter.hours`; `log.retention.ms` over
`log.retention.minutes` over `log.retention.hours` (a negative result means unlimited, -1);
`log.flush.interval.ms` unset means `log.flush.scheduler.interval.ms`. A topic override beats the
broker's `log.*` synonym, which beats the default.

KRaft plumbing keys (`process.roles`, `controller.quorum.voters`, `controller.quorum.bootstrap.servers`,
`controller.listener.names`, `inter.broker.listener.name`, `listener.security.protocol.map`) are
accepted without a warning so that Kafka's stock KRaft `server.properties` works: a single Odradek
node is its own controller, so listeners named in `controller.listener.names` are not served.
Only PLAINTEXT listeners are served; any other security protocol is a `ConfigError`.

Everything here is pure (no I/O except reading the properties file in `load`); any layer may
call it from anywhere.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

from odradek.storage.log_config import LogConfig

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
DEFAULT_LOG_DIR = "./odradek-data"


class ConfigError(ValueError):
    """An invalid value for a known config; the message is one line and names the key."""


class ConfigType(enum.IntEnum):
    """DescribeConfigs' ConfigType (DescribeConfigsResponse.ConfigType)."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


class ConfigSource(enum.IntEnum):
    """DescribeConfigs' ConfigSource (DescribeConfigsResponse.ConfigSource)."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    DYNAMIC_BROKER_LOGGER_CONFIG = 6


# -- value parsing and validation (Kafka's ConfigDef types and validators) -----------------------
_INTEGER = re.compile(r"[+-]?[0-9]+")
_RANGES = {ConfigType.SHORT: (INT16_MIN, INT16_MAX), ConfigType.INT: (INT32_MIN, INT32_MAX),
           ConfigType.LONG: (INT64_MIN, INT64_MAX)}


class InvalidValue(Exception):
    """Raised by parsers/validators with Kafka's reason text; turned into ConfigError or a message."""


def parse_value(config_type: ConfigType, text: str) -> Any:
    """Parse one config value as Kafka's ConfigDef.parseType does (trimmed)."""
    value = text.strip()
    if config_type in _RANGES:
        if not _INTEGER.fullmatch(value):
            raise InvalidValue(f"Not a number of type {config_type.name}")
        number = int(value)
        low, high = _RANGES[config_type]
        if not low <= number <= high:
            raise InvalidValue(f"Not a number of type {config_type.name}")
        return number
    if config_type is ConfigType.DOUBLE:
        try:
            number = float(value)
        except ValueError:
            raise InvalidValue("Not a number of type DOUBLE") from None
        if math.isnan(number) or "_" in value:
            raise InvalidValue("Not a number of type DOUBLE")
        return number
    if config_type is ConfigType.BOOLEAN:
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise InvalidValue("Expected value to be either true or false")
        return lowered == "true"
    if config_type is ConfigType.LIST:
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def format_value(config_type: ConfigType, value: Any) -> str | None:
    """A parsed value back to the string Kafka shows in DescribeConfigs."""
    if value is None:
        return None
    if config_type is ConfigType.BOOLEAN:
        return "true" if value else "false"
    if config_type is ConfigType.LIST:
        return ",".join(str(v) for v in value)
    if config_type is ConfigType.DOUBLE:
        return repr(float(value))
    return str(value)


def at_least(minimum: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is not None and value < minimum:
            raise InvalidValue(f"Value must be at least {minimum}")
    return check


def between(minimum: float, maximum: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is None:
            return
        if value < minimum:
            raise InvalidValue(f"Value must be at least {minimum}")
        if value > maximum:
            raise InvalidValue(f"Value must be no more than {maximum}")
    return check


def one_of(*choices: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is not None and value not in choices:
            raise InvalidValue(f"String must be one of: {', '.join(choices)}")
    return check


def list_of(*choices: str, allow_empty: bool = False) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is None:
            return
        if not value and not allow_empty:
            raise InvalidValue("Empty list not allowed")
        for item in value:
            if item not in choices:
                raise InvalidValue(f"String must be one of: {', '.join(choices)}")
    return check


def either(check: Callable[[Any], None], *allowed: Any) -> Callable[[Any], None]:
    def combined(value: Any) -> None:
        if value not in allowed:
            check(value)
    return combined


def _no_check(value: Any) -> None:
    return None


# -- listeners ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Listener:
    """One `NAME://host:port` entry of `listeners` / `advertised.listeners`.

    `host` is "" for all interfaces (`PLAINTEXT://:9092`); IPv6 brackets are removed. `port` 0
    asks the OS for a free port when binding. `name` is upper-cased as Kafka normalises it.
    """

    name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


_LISTENER = re.compile(r"([A-Za-z0-9_\-]+)://(\[[^\]]*\]|[^:\[\]]*):([0-9]+)")
DEFAULT_SECURITY_PROTOCOL_MAP = {"PLAINTEXT": "PLAINTEXT", "SSL": "SSL",
                                 "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"}


def parse_listeners(value: str, key: str = "listeners") -> tuple[Listener, ...]:
    """Parse a comma-separated list of `NAME://host:port`; raises ConfigError naming `key`."""
    listeners: list[Listener] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        match = _LISTENER.fullmatch(item)
        if match is None:
            raise ConfigError(f"Invalid value {value} for configuration {key}: "
                              f"{item!r} is not of the form NAME://host:port")
        name, host, port = match.group(1).upper(), match.group(2), int(match.group(3))
        if host.startswith("["):
            host = host[1:-1]
        if port > 65535:
            raise ConfigError(f"Invalid value {value} for configuration {key}: port {port} is out of range")
        if any(existing.name == name for existing in listeners):
            raise ConfigError(f"Invalid value {value} for configuration {key}: "
                              f"each listener must have a different name, {name} appears twice")
        if port and any(existing.port == port and existing.host == host for existing in listeners):
            raise ConfigError(f"Invalid value {value} for configuration {key}: "
                              f"each listener must have a different port, {port} appears twice")
        listeners.append(Listener(name, host, port))
    return tuple(listeners)


def _parse_protocol_map(value: str) -> dict[str, str]:
    mapping = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, protocol = item.partition(":")
        if not sep or not name.strip() or not protocol.strip():
            raise ConfigError(f"Invalid value {value} for configuration listener.security.protocol.map: "
                              f"{item!r} is not of the form NAME:PROTOCOL")
        mapping[name.strip().upper()] = protocol.strip().upper()
    return mapping


# -- Java properties files ----------------------------------------------------------------------
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_WHITESPACE = " \t\f"


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java `.properties` text as `java.util.Properties.load` does.

    Comment lines start with `#` or `!`; a key ends at the first unescaped `=`, `:` or
    whitespace; a line ending in an odd number of backslashes continues on the next line (whose
    leading whitespace is dropped); escapes `\\t \\n \\r \\f \\uXXXX` and `\\<any>` are decoded.
    A later duplicate key replaces an earlier one.
    """
    result: dict[str, str] = {}
    for logical in _logical_lines(text):
        key, value = _split_key_value(logical)
        result[_unescape(key)] = _unescape(value)
    return result


def _logical_lines(text: str) -> Iterable[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].lstrip(_WHITESPACE)
        i += 1
        if not line or line[0] in "#!":
            continue
        parts = []
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 1:
                parts.append(line[:-1])
                if i >= len(lines):
                    break
                line = lines[i].lstrip(_WHITESPACE)
                i += 1
                continue
            parts.append(line)
            break
        yield "".join(parts)


def _split_key_value(line: str) -> tuple[str, str]:
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=:" or ch in _WHITESPACE:
            break
        i += 1
    key = line[:i]
    j = i
    while j < n and line[j] in _WHITESPACE:
        j += 1
    if j < n and line[j] in "=:":
        j += 1
        while j < n and line[j] in _WHITESPACE:
            j += 1
    return key, line[j:]


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2:i + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ConfigError(f"Malformed \\uxxxx encoding in properties: {text!r}")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


# -- broker config definitions -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BrokerConfigDef:
    """One broker config: Kafka name, type, parsed default (None: unset), validator, doc."""

    name: str
    config_type: ConfigType
    default: Any
    validator: Callable[[Any], None]
    doc: str

    @property
    def field_name(self) -> str:
        return self.name.replace(".", "_")


def _b(name: str, config_type: ConfigType, default: Any, validator: Callable[[Any], None] | None,
       doc: str) -> BrokerConfigDef:
    return BrokerConfigDef(name, config_type, default, validator or _no_check, doc)


I, L, S, B, D, LST = (ConfigType.INT, ConfigType.LONG, ConfigType.STRING, ConfigType.BOOLEAN,
                      ConfigType.DOUBLE, ConfigType.LIST)
_COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
_GZIP_LEVEL = either(between(1, 9), -1)
_LZ4_LEVEL = between(1, 17)
_ZSTD_LEVEL = between(-131072, 22)

# The broker configs Odradek implements. `listeners`, `advertised.listeners` and `log.dirs` are
# parsed specially (see BrokerConfig.load) but are described here like any other.
BROKER_CONFIG_DEFS: tuple[BrokerConfigDef, ...] = (
    _b("node.id", I, 1, at_least(0), "The node id of this broker (ODRADEK default 1; Kafka requires it)."),
    _b("listeners", LST, ("PLAINTEXT://127.0.0.1:9092",), None,
       "Listeners as NAME://host:port; empty host = all interfaces, port 0 = any free port."),
    _b("advertised.listeners", LST, None, None,
       "Addresses given to clients, per listener name; unset = the listeners as bound."),
    _b("log.dirs", LST, None, None, "Data directories; overrides log.dir."),
    _b("log.dir", S, DEFAULT_LOG_DIR, None,
       "The data directory when log.dirs is unset (ODRADEK default ./odradek-data; Kafka /tmp/kafka-logs)."),
    _b("cluster.id", S, None, None,
       "Odradek extension: the cluster id; unset = generated on first start, kept in meta.properties."),
    _b("broker.rack", S, None, None, "Rack of the broker, reported in Metadata."),
    _b("odradek.log.max.open.files", I, 0, at_least(0),
       "ODRADEK: most segment and index files kept open while unused (least recently used are "
       "closed and reopened on demand); 0 = a quarter of the open-file limit, at most 4096."),
    _b("metadata.quorum", S, None, None,
       "ODRADEK: cluster mode's metadata quorum, etcd://host:port[,host:port]; unset = a single "
       "node with its embedded metadata log."),
    _b("broker.session.timeout.ms", I, 9000, at_least(1000),
       "A broker that stops renewing its registration this long is dead (its etcd lease TTL, "
       "rounded up to whole seconds)."),
    _b("auto.leader.rebalance.enable", B, True, None,
       "The controller moves leadership back to each partition's preferred replica (its first) when "
       "that replica is alive and in the ISR, checked every leader.imbalance.check.interval.seconds."),
    _b("leader.imbalance.check.interval.seconds", L, 300, at_least(1),
       "How often the controller checks for partitions not led by their preferred replica."),
    _b("leader.imbalance.per.broker.percentage", I, 10, at_least(0),
       "Accepted for compatibility: as in KRaft, every imbalanced partition is rebalanced."),
    _b("replica.lag.time.max.ms", L, 30000, at_least(1),
       "A follower not caught up for this long leaves the ISR."),
    _b("replica.fetch.max.bytes", I, 1048576, at_least(0), "Bytes a follower asks per partition."),
    _b("replica.fetch.response.max.bytes", I, 10485760, at_least(0),
       "Bytes a follower asks per fetch."),
    _b("replica.fetch.wait.max.ms", I, 500, at_least(0), "How long a follower's fetch may wait."),
    _b("replica.fetch.min.bytes", I, 1, at_least(1), "Bytes a follower's fetch waits for."),
    _b("replica.fetch.backoff.ms", I, 1000, at_least(0), "Pause after a failed follower fetch."),
    _b("replica.socket.timeout.ms", I, 30000, at_least(1), "A follower's request timeout."),
    _b("num.partitions", I, 1, at_least(1), "Default number of partitions of a new topic."),
    _b("default.replication.factor", I, 1, at_least(1), "Default replication factor of a new topic."),
    _b("auto.create.topics.enable", B, True, None, "Create a topic when a client asks for its metadata."),
    _b("delete.topic.enable", B, True, None, "Allow DeleteTopics."),
    _b("message.max.bytes", I, 1048588, at_least(0), "Largest record batch a topic accepts (max.message.bytes)."),
    _b("socket.request.max.bytes", I, 104857600, at_least(1), "Largest request the broker reads."),
    _b("queued.max.requests", I, 500, at_least(1), "Requests queued per connection before reading pauses."),
    _b("max.connections", I, INT32_MAX, at_least(0), "Most connections the broker accepts."),
    _b("max.connections.per.ip", I, INT32_MAX, at_least(0), "Most connections from one address."),
    _b("connections.max.idle.ms", L, 600000, None, "Close connections idle for this long."),
    _b("fetch.max.bytes", I, 57671680, at_least(1024), "Most bytes returned by one Fetch."),
    _b("log.segment.bytes", I, 1073741824, at_least(1024 * 1024), "Size of a log segment (segment.bytes)."),
    _b("log.roll.ms", L, None, at_least(1), "Roll a segment after this long (segment.ms); over log.roll.hours."),
    _b("log.roll.hours", I, 168, at_least(1), "Roll a segment after this many hours (segment.ms)."),
    _b("log.roll.jitter.ms", L, None, at_least(0), "Random jitter subtracted from the roll time (segment.jitter.ms)."),
    _b("log.roll.jitter.hours", I, 0, at_least(0), "Roll jitter in hours (segment.jitter.ms)."),
    _b("log.index.interval.bytes", I, 4096, at_least(0), "Bytes between offset index entries (index.interval.bytes)."),
    _b("log.index.size.max.bytes", I, 10485760, at_least(4), "Size of an offset index (segment.index.bytes)."),
    _b("log.flush.interval.messages", L, INT64_MAX, at_least(1), "fsync after this many records (flush.messages)."),
    _b("log.flush.interval.ms", L, None, None,
       "fsync when the oldest unflushed record is this old (flush.ms); unset = log.flush.scheduler.interval.ms."),
    _b("log.flush.scheduler.interval.ms", L, INT64_MAX, None, "How often to check for logs due a flush."),
    _b("log.flush.offset.checkpoint.interval.ms", I, 60000, at_least(0), "How often recovery points are checkpointed."),
    _b("log.flush.start.offset.checkpoint.interval.ms", I, 60000, at_least(0),
       "How often log start offsets are checkpointed."),
    _b("log.retention.ms", L, None, None, "Keep data this long (retention.ms); -1 unlimited; over minutes/hours."),
    _b("log.retention.minutes", I, None, None, "Retention in minutes; over log.retention.hours."),
    _b("log.retention.hours", I, 168, None, "Retention in hours (retention.ms)."),
    _b("log.retention.bytes", L, -1, None, "Most bytes kept per partition (retention.bytes); -1 unlimited."),
    _b("log.retention.check.interval.ms", L, 300000, at_least(1), "How often retention is checked."),
    _b("log.segment.delete.delay.ms", L, 60000, at_least(0), "Delay before a deleted segment's files go (file.delete.delay.ms)."),
    _b("log.cleanup.policy", LST, ("delete",), list_of("compact", "delete"), "delete, compact or both (cleanup.policy)."),
    _b("log.cleaner.enable", B, True, None, "Run the log cleaner for compacted topics."),
    _b("log.cleaner.delete.retention.ms", L, 86400000, at_least(0), "Keep tombstones this long (delete.retention.ms)."),
    _b("log.cleaner.min.compaction.lag.ms", L, 0, at_least(0), "Least age before compaction (min.compaction.lag.ms)."),
    _b("log.cleaner.max.compaction.lag.ms", L, INT64_MAX, at_least(1), "Most age before compaction (max.compaction.lag.ms)."),
    _b("log.cleaner.min.cleanable.ratio", D, 0.5, between(0, 1), "Dirty ratio that triggers cleaning (min.cleanable.dirty.ratio)."),
    _b("log.cleaner.backoff.ms", L, 15000, at_least(0), "Cleaner sleep when there is nothing to clean."),
    _b("log.cleaner.dedupe.buffer.size", L, 134217728, at_least(1024),
       "Memory for the cleaner's offset map (24 bytes an entry, as Kafka; Python's dict costs more)."),
    _b("log.preallocate", B, False, None, "Preallocate segment files (preallocate)."),
    _b("log.message.timestamp.type", S, "CreateTime", one_of("CreateTime", "LogAppendTime"),
       "CreateTime or LogAppendTime (message.timestamp.type)."),
    _b("log.message.timestamp.before.max.ms", L, INT64_MAX, at_least(0),
       "Most a record's timestamp may be behind the broker's clock (message.timestamp.before.max.ms)."),
    _b("log.message.timestamp.after.max.ms", L, 3600000, at_least(0),
       "Most a record's timestamp may be ahead of the broker's clock (message.timestamp.after.max.ms)."),
    _b("log.message.downconversion.enable", B, True, None, "Accepted for compatibility; Odradek never down-converts."),
    _b("compression.type", S, "producer", one_of(*_COMPRESSION_TYPES), "Codec batches are stored with (compression.type)."),
    _b("compression.gzip.level", I, -1, _GZIP_LEVEL, "gzip level when compression.type=gzip."),
    _b("compression.lz4.level", I, 9, _LZ4_LEVEL, "lz4 level when compression.type=lz4."),
    _b("compression.zstd.level", I, 3, _ZSTD_LEVEL, "zstd level when compression.type=zstd."),
    _b("min.insync.replicas", I, 1, at_least(1), "Least ISR size for acks=all (min.insync.replicas)."),
    _b("unclean.leader.election.enable", B, False, None, "Allow out-of-sync replicas to become leader."),
    _b("offsets.topic.num.partitions", I, 50, at_least(1), "Partitions of __consumer_offsets."),
    _b("offsets.topic.replication.factor", ConfigType.SHORT, 1, at_least(1),
       "Replication factor of __consumer_offsets (ODRADEK default 1; Kafka 3)."),
    _b("offsets.topic.segment.bytes", I, 104857600, at_least(1), "Segment size of __consumer_offsets."),
    _b("offsets.retention.minutes", I, 10080, at_least(1), "Keep committed offsets of empty groups this long."),
    _b("offsets.retention.check.interval.ms", L, 600000, at_least(1), "How often stale offsets are removed."),
    _b("offsets.commit.timeout.ms", I, 5000, at_least(1), "Timeout of an offset commit's append."),
    _b("group.initial.rebalance.delay.ms", I, 3000, None, "Wait for more members before the first rebalance."),
    _b("group.min.session.timeout.ms", I, 6000, None, "Least session timeout a member may ask for."),
    _b("group.max.session.timeout.ms", I, 1800000, None, "Most session timeout a member may ask for."),
    _b("group.max.size", I, INT32_MAX, at_least(1), "Most members in one group."),
    _b("transaction.max.timeout.ms", I, 900000, at_least(1), "Most transaction timeout a producer may ask for."),
    _b("transaction.state.log.num.partitions", I, 50, at_least(1), "Partitions of __transaction_state."),
    _b("transaction.state.log.replication.factor", ConfigType.SHORT, 1, at_least(1),
       "Replication factor of __transaction_state (ODRADEK default 1; Kafka 3)."),
    _b("transaction.state.log.min.isr", I, 1, at_least(1), "min.insync.replicas of __transaction_state (ODRADEK 1)."),
    _b("transaction.state.log.segment.bytes", I, 104857600, at_least(1), "Segment size of __transaction_state."),
    _b("transactional.id.expiration.ms", I, 604800000, at_least(1), "Forget idle transactional ids after this long."),
    _b("transaction.abort.timed.out.transaction.cleanup.interval.ms", I, 10000, at_least(1),
       "How often the coordinator aborts transactions open past their timeout."),
    _b("transaction.remove.expired.transaction.cleanup.interval.ms", I, 3600000, at_least(1),
       "How often the coordinator forgets expired transactional ids."),
    _b("producer.id.expiration.ms", I, 86400000, at_least(1), "Forget idle producer ids after this long."),
)
BROKER_CONFIGS: dict[str, BrokerConfigDef] = {d.name: d for d in BROKER_CONFIG_DEFS}

# Known to Kafka's KRaft mode, meaningless for one self-contained node: accepted silently.
KRAFT_PLUMBING_KEYS = frozenset({
    "process.roles", "controller.quorum.voters", "controller.quorum.bootstrap.servers",
    "controller.listener.names", "inter.broker.listener.name", "listener.security.protocol.map",
    "broker.id",
})

# Broker configs whose values combine (first set wins), as Kafka's synonyms in DescribeConfigs.
BROKER_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("log.roll.ms", "log.roll.hours"),
    ("log.roll.jitter.ms", "log.roll.jitter.hours"),
    ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
    ("log.dirs", "log.dir"),
)


def _default(name: str) -> Any:
    value = BROKER_CONFIGS[name].default
    return field(default=value)


@dataclass(frozen=True)
class BrokerConfig:
    """The broker's static configuration: every field is a Kafka broker config, parsed.

    Field `x_y_z` is Kafka's `x.y.z`; defaults come from BROKER_CONFIG_DEFS. Derived values
    with Kafka's precedence are properties (`log_roll_ms_effective`, `log_retention_ms_effective`,
    ...). `static_configs` holds the raw strings of the keys that were set explicitly (for
    DescribeConfigs sources). Immutable: made once at start by `load`, read by every layer.

    Invariants: `listeners` is non-empty and holds only PLAINTEXT listeners with distinct names;
    every `advertised_listeners` name is a listener name; `log_dirs` is non-empty.
    """

    node_id: int = _default("node.id")
    listeners: tuple[Listener, ...] = (Listener("PLAINTEXT", "127.0.0.1", 9092),)
    advertised_listeners: tuple[Listener, ...] = ()
    controller_listeners: tuple[Listener, ...] = ()
    log_dirs: tuple[str, ...] = (DEFAULT_LOG_DIR,)
    cluster_id: str | None = _default("cluster.id")
    broker_rack: str | None = _default("broker.rack")
    odradek_log_max_open_files: int = _default("odradek.log.max.open.files")
    metadata_quorum: str | None = _default("metadata.quorum")
    broker_session_timeout_ms: int = _default("broker.session.timeout.ms")
    auto_leader_rebalance_enable: bool = _default("auto.leader.rebalance.enable")
    leader_imbalance_check_interval_seconds: int = _default("leader.imbalance.check.interval.seconds")
    leader_imbalance_per_broker_percentage: int = _default("leader.imbalance.per.broker.percentage")
    replica_lag_time_max_ms: int = _default("replica.lag.time.max.ms")
    replica_fetch_max_bytes: int = _default("replica.fetch.max.bytes")
    replica_fetch_response_max_bytes: int = _default("replica.fetch.response.max.bytes")
    replica_fetch_wait_max_ms: int = _default("replica.fetch.wait.max.ms")
    replica_fetch_min_bytes: int = _default("replica.fetch.min.bytes")
    replica_fetch_backoff_ms: int = _default("replica.fetch.backoff.ms")
    replica_socket_timeout_ms: int = _default("replica.socket.timeout.ms")
    num_partitions: int = _default("num.partitions")
    default_replication_factor: int = _default("default.replication.factor")
    auto_create_topics_enable: bool = _default("auto.create.topics.enable")
    delete_topic_enable: bool = _default("delete.topic.enable")
    message_max_bytes: int = _default("message.max.bytes")
    socket_request_max_bytes: int = _default("socket.request.max.bytes")
    queued_max_requests: int = _default("queued.max.requests")
    max_connections: int = _default("max.connections")
    max_connections_per_ip: int = _default("max.connections.per.ip")
    connections_max_idle_ms: int = _default("connections.max.idle.ms")
    fetch_max_bytes: int = _default("fetch.max.bytes")
    log_segment_bytes: int = _default("log.segment.bytes")
    log_roll_ms: int | None = _default("log.roll.ms")
    log_roll_hours: int = _default("log.roll.hours")
    log_roll_jitter_ms: int | None = _default("log.roll.jitter.ms")
    log_roll_jitter_hours: int = _default("log.roll.jitter.hours")
    log_index_interval_bytes: int = _default("log.index.interval.bytes")
    log_index_size_max_bytes: int = _default("log.index.size.max.bytes")
    log_flush_interval_messages: int = _default("log.flush.interval.messages")
    log_flush_interval_ms: int | None = _default("log.flush.interval.ms")
    log_flush_scheduler_interval_ms: int = _default("log.flush.scheduler.interval.ms")
    log_flush_offset_checkpoint_interval_ms: int = _default("log.flush.offset.checkpoint.interval.ms")
    log_flush_start_offset_checkpoint_interval_ms: int = _default("log.flush.start.offset.checkpoint.interval.ms")
    log_retention_ms: int | None = _default("log.retention.ms")
    log_retention_minutes: int | None = _default("log.retention.minutes")
    log_retention_hours: int = _default("log.retention.hours")
    log_retention_bytes: int = _default("log.retention.bytes")
    log_retention_check_interval_ms: int = _default("log.retention.check.interval.ms")
    log_segment_delete_delay_ms: int = _default("log.segment.delete.delay.ms")
    log_cleanup_policy: tuple[str, ...] = _default("log.cleanup.policy")
    log_cleaner_enable: bool = _default("log.cleaner.enable")
    log_cleaner_delete_retention_ms: int = _default("log.cleaner.delete.retention.ms")
    log_cleaner_min_compaction_lag_ms: int = _default("log.cleaner.min.compaction.lag.ms")
    log_cleaner_max_compaction_lag_ms: int = _default("log.cleaner.max.compaction.lag.ms")
    log_cleaner_min_cleanable_ratio: float = _default("log.cleaner.min.cleanable.ratio")
    log_cleaner_backoff_ms: int = _default("log.cleaner.backoff.ms")
    log_preallocate: bool = _default("log.preallocate")
    log_message_timestamp_type: str = _default("log.message.timestamp.type")
    log_message_timestamp_before_max_ms: int = _default("log.message.timestamp.before.max.ms")
    log_message_timestamp_after_max_ms: int = _default("log.message.timestamp.after.max.ms")
    log_message_downconversion_enable: bool = _default("log.message.downconversion.enable")
    compression_type: str = _default("compression.type")
    compression_gzip_level: int = _default("compression.gzip.level")
    compression_lz4_level: int = _default("compression.lz4.level")
    compression_zstd_level: int = _default("compression.zstd.level")
    min_insync_replicas: int = _default("min.insync.replicas")
    unclean_leader_election_enable: bool = _default("unclean.leader.election.enable")
    offsets_topic_num_partitions: int = _default("offsets.topic.num.partitions")
    offsets_topic_replication_factor: int = _default("offsets.topic.replication.factor")
    offsets_topic_segment_bytes: int = _default("offsets.topic.segment.bytes")
    offsets_retention_minutes: int = _default("offsets.retention.minutes")
    offsets_retention_check_interval_ms: int = _default("offsets.retention.check.interval.ms")
    offsets_commit_timeout_ms: int = _default("offsets.commit.timeout.ms")
    group_initial_rebalance_delay_ms: int = _default("group.initial.rebalance.delay.ms")
    group_min_session_timeout_ms: int = _default("group.min.session.timeout.ms")
    group_max_session_timeout_ms: int = _default("group.max.session.timeout.ms")
    group_max_size: int = _default("group.max.size")
    transaction_max_timeout_ms: int = _default("transaction.max.timeout.ms")
    transaction_state_log_num_partitions: int = _default("transaction.state.log.num.partitions")
    transaction_state_log_replication_factor: int = _default("transaction.state.log.replication.factor")
    transaction_state_log_min_isr: int = _default("transaction.state.log.min.isr")
    transaction_state_log_segment_bytes: int = _default("transaction.state.log.segment.bytes")
    transactional_id_expiration_ms: int = _default("transactional.id.expiration.ms")
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = _default(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms")
    transaction_remove_expired_transaction_cleanup_interval_ms: int = _default(
        "transaction.remove.expired.transaction.cleanup.interval.ms")
    producer_id_expiration_ms: int = _default("producer.id.expiration.ms")
    log_cleaner_dedupe_buffer_size: int = _default("log.cleaner.dedupe.buffer.size")
    static_configs: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Dynamic broker configs applied by `with_dynamic_configs`: name -> ((value, source), ...),
    # the per-broker entry before the cluster default (DescribeConfigs synonyms).
    dynamic_configs: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict, compare=False,
                                                                     repr=False)

    # -- Kafka's precedence rules --------------------------------------------------------------
    @property
    def log_roll_ms_effective(self) -> int:
        """segment.ms default: log.roll.ms, else log.roll.hours."""
        return self.log_roll_ms if self.log_roll_ms is not None else self.log_roll_hours * MS_PER_HOUR

    @property
    def log_roll_jitter_ms_effective(self) -> int:
        if self.log_roll_jitter_ms is not None:
            return self.log_roll_jitter_ms
        return self.log_roll_jitter_hours * MS_PER_HOUR

    @property
    def log_retention_ms_effective(self) -> int:
        """retention.ms default: log.retention.ms, else minutes, else hours; negative = -1."""
        if self.log_retention_ms is not None:
            millis = self.log_retention_ms
        elif self.log_retention_minutes is not None:
            millis = self.log_retention_minutes * MS_PER_MINUTE
        else:
            millis = self.log_retention_hours * MS_PER_HOUR
        return -1 if millis < 0 else millis

    @property
    def log_flush_interval_ms_effective(self) -> int:
        if self.log_flush_interval_ms is not None:
            return self.log_flush_interval_ms
        return self.log_flush_scheduler_interval_ms

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, properties_path: str | None, overrides: dict[str, str] | None = None
             ) -> tuple["BrokerConfig", list[str]]:
        """Read `properties_path` (if any), apply `overrides`, validate; returns (config, warnings).

        Raises ConfigError for an invalid value of a known key (one line, naming the key) and
        OSError when the file cannot be read.
        """
        raw: dict[str, str] = {}
        if properties_path is not None:
            with open(properties_path, encoding="utf-8") as f:
                raw.update(parse_properties(f.read()))
        raw.update({str(k): str(v) for k, v in (overrides or {}).items()})
        return cls.from_properties(raw)

    @classmethod
    def from_properties(cls, raw: dict[str, str]) -> tuple["BrokerConfig", list[str]]:
        """Build a config from Kafka-named string values; returns (config, warnings)."""
        warnings: list[str] = []
        values: dict[str, Any] = {}
        static: dict[str, str] = {}
        for key, text in raw.items():
            definition = BROKER_CONFIGS.get(key)
            if definition is None:
                if key not in KRAFT_PLUMBING_KEYS:
                    warnings.append(f"ignoring config {key}={text}: not a config Odradek supports")
                continue
            static[key] = text.strip()
            if key in ("listeners", "advertised.listeners", "log.dirs"):
                continue
            if definition.config_type is ConfigType.STRING and definition.default is None and not text.strip():
                values[definition.field_name] = None
                continue
            values[definition.field_name] = _parse_checked(definition.name, definition.config_type,
                                                           definition.validator, text)

        if "broker.id" in raw:
            broker_id = _parse_checked("broker.id", ConfigType.INT, at_least(0), raw["broker.id"])
            if "node.id" in raw and values["node_id"] != broker_id:
                raise ConfigError(f"Invalid value {raw['broker.id']} for configuration broker.id: "
                                  f"must equal node.id ({values['node_id']})")
            values["node_id"] = broker_id

        protocol_map = dict(DEFAULT_SECURITY_PROTOCOL_MAP)
        if "listener.security.protocol.map" in raw:
            protocol_map = _parse_protocol_map(raw["listener.security.protocol.map"])
        controller_names = {n.strip().upper() for n in raw.get("controller.listener.names", "").split(",")
                            if n.strip()}
        listeners = parse_listeners(raw.get("listeners", ",".join(BROKER_CONFIGS["listeners"].default)))
        served, controller = [], []
        for listener in listeners:
            protocol = protocol_map.get(listener.name)
            if protocol is None:
                raise ConfigError(f"Invalid value {raw.get('listeners')} for configuration listeners: "
                                  f"no security protocol defined for listener {listener.name} "
                                  "(see listener.security.protocol.map)")
            listener = dataclasses.replace(listener, security_protocol=protocol)
            if listener.name in controller_names:
                controller.append(listener)
                continue
            if protocol != "PLAINTEXT":
                raise ConfigError(f"Invalid value {raw.get('listeners')} for configuration listeners: "
                                  f"listener {listener.name} uses {protocol}; Odradek serves PLAINTEXT only")
            served.append(listener)
        if not served:
            raise ConfigError(f"Invalid value {raw.get('listeners', '')} for configuration listeners: "
                              "at least one PLAINTEXT listener is required")
        values["listeners"] = tuple(served)
        values["controller_listeners"] = tuple(controller)

        advertised_text = raw.get("advertised.listeners", "").strip()
        advertised = parse_listeners(advertised_text, "advertised.listeners") if advertised_text else ()
        served_names = {listener.name for listener in served} | controller_names
        for listener in advertised:
            if listener.name not in served_names:
                raise ConfigError(f"Invalid value {advertised_text} for configuration advertised.listeners: "
                                  f"listener {listener.name} is not in listeners")
            if listener.host in ("0.0.0.0", "::"):
                raise ConfigError(f"Invalid value {advertised_text} for configuration advertised.listeners: "
                                  f"cannot advertise the meta-address {listener.host}")
        values["advertised_listeners"] = tuple(
            dataclasses.replace(a, security_protocol=protocol_map.get(a.name, "PLAINTEXT"))
            for a in advertised if a.name not in controller_names)

        dirs_text = raw.get("log.dirs", "").strip()
        if dirs_text:
            log_dirs = tuple(d.strip() for d in dirs_text.split(",") if d.strip())
        else:
            log_dirs = (values.get("log_dir") or DEFAULT_LOG_DIR,)
        if not log_dirs:
            raise ConfigError(f"Invalid value {raw.get('log.dirs')} for configuration log.dirs: no directory given")
        values["log_dirs"] = log_dirs
        values.pop("log_dir", None)
        if "cluster_id" in values and values["cluster_id"] is not None:
            if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", values["cluster_id"]):
                raise ConfigError(f"Invalid value {values['cluster_id']} for configuration cluster.id: "
                                  "use 1-64 characters from [A-Za-z0-9_-]")

        config = cls(**values, static_configs=static)
        if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms:
            raise ConfigError(f"Invalid value {config.group_min_session_timeout_ms} for configuration "
                              f"group.min.session.timeout.ms: must not exceed group.max.session.timeout.ms "
                              f"({config.group_max_session_timeout_ms})")
        return config, warnings

    def with_dynamic_configs(self, cluster_default: dict[str, str], per_broker: dict[str, str]
                             ) -> "BrokerConfig":
        """This (static) config with dynamic broker configs from the metadata image applied:
        per-broker over cluster default (`""`) over static. Entries that are not dynamic or no
        longer parse are skipped (they were validated when written)."""
        values: dict[str, Any] = {}
        sources: dict[str, list[tuple[str, int]]] = {}
        for layer, source in ((cluster_default, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
                              (per_broker, ConfigSource.DYNAMIC_BROKER_CONFIG)):
            for name, text in layer.items():
                definition = BROKER_CONFIGS.get(name)
                if definition is None or name not in DYNAMIC_BROKER_CONFIGS or text is None:
                    continue
                try:
                    value = parse_value(definition.config_type, text)
                    definition.validator(value)
                except InvalidValue:
                    continue
                values[definition.field_name] = value
                sources.setdefault(name, []).insert(0, (text, int(source)))
        if not values and not self.dynamic_configs:
            return self
        return dataclasses.replace(self, **values, dynamic_configs={k: tuple(v) for k, v in sources.items()})

    # -- views ---------------------------------------------------------------------------------
    def log_config(self, topic_overrides: dict[str, str] | None = None) -> LogConfig:
        """The storage view of a topic: topic override > broker `log.*` synonym > default.

        Every LogConfig field named like a topic config (`segment.bytes` -> `segment_bytes`) is
        filled. An override that no longer parses (it was validated when written) is ignored.
        """
        overrides = topic_overrides or {}
        kwargs = {}
        for f in dataclasses.fields(LogConfig):
            definition = TOPIC_CONFIGS.get(f.name.replace("_", "."))
            if definition is None:
                continue
            kwargs[f.name] = topic_config_value(self, overrides, definition.name)
        return LogConfig(**kwargs)


# Fields must match the definitions one to one (log.dir folds into log_dirs).
assert {d.field_name for d in BROKER_CONFIG_DEFS} - {"log_dir"} == \
    {f.name for f in dataclasses.fields(BrokerConfig)} - {"controller_listeners", "static_configs", "dynamic_configs"}


def _parse_checked(name: str, config_type: ConfigType, validator: Callable[[Any], None], text: str) -> Any:
    try:
        value = parse_value(config_type, text)
        validator(value)
        return value
    except InvalidValue as exc:
        raise ConfigError(f"Invalid value {text.strip()} for configuration {name}: {exc}") from None


# -- topic configs ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    """One topic config: Kafka name, type, Kafka default, broker synonyms, validator, doc.

    `broker_synonyms` lists the broker keys that set this topic config's default, in Kafka's
    precedence order; `broker_value(broker)` applies that precedence (in topic units).
    `valid_values` is shown to humans (CLI, docs); `validator` is what enforces it.
    """

    name: str
    config_type: ConfigType
    default: Any
    broker_synonyms: tuple[str, ...]
    broker_value: Callable[[BrokerConfig], Any] | None
    validator: Callable[[Any], None]
    doc: str
    valid_values: tuple[str, ...] = ()


def _t(name: str, config_type: ConfigType, default: Any, synonyms: tuple[str, ...],
       broker_value: Callable[[BrokerConfig], Any] | None, validator: Callable[[Any], None] | None,
       doc: str, valid_values: tuple[str, ...] = ()) -> TopicConfigDef:
    return TopicConfigDef(name, config_type, default, synonyms, broker_value, validator or _no_check, doc,
                          valid_values)


def _field(name: str) -> Callable[[BrokerConfig], Any]:
    attribute = name.replace(".", "_")
    return lambda broker: getattr(broker, attribute)


TOPIC_CONFIG_DEFS: tuple[TopicConfigDef, ...] = (
    _t("cleanup.policy", LST, ("delete",), ("log.cleanup.policy",), _field("log.cleanup.policy"),
       list_of("compact", "delete"), "delete old segments, compact by key, or both.", ("compact", "delete")),
    _t("compression.type", S, "producer", ("compression.type",), _field("compression.type"),
       one_of(*_COMPRESSION_TYPES), "Codec batches are stored with; producer keeps the producer's.",
       _COMPRESSION_TYPES),
    _t("compression.gzip.level", I, -1, ("compression.gzip.level",), _field("compression.gzip.level"),
       _GZIP_LEVEL, "gzip level when compression.type=gzip."),
    _t("compression.lz4.level", I, 9, ("compression.lz4.level",), _field("compression.lz4.level"),
       _LZ4_LEVEL, "lz4 level when compression.type=lz4."),
    _t("compression.zstd.level", I, 3, ("compression.zstd.level",), _field("compression.zstd.level"),
       _ZSTD_LEVEL, "zstd level when compression.type=zstd."),
    _t("delete.retention.ms", L, 86400000, ("log.cleaner.delete.retention.ms",),
       _field("log.cleaner.delete.retention.ms"), at_least(0), "How long tombstones are kept in compacted topics."),
    _t("file.delete.delay.ms", L, 60000, ("log.segment.delete.delay.ms",), _field("log.segment.delete.delay.ms"),
       at_least(0), "Delay before a deleted segment's files are removed."),
    _t("flush.messages", L, INT64_MAX, ("log.flush.interval.messages",), _field("log.flush.interval.messages"),
       at_least(1), "fsync the log after this many records."),
    _t("flush.ms", L, INT64_MAX, ("log.flush.interval.ms",), lambda b: b.log_flush_interval_ms_effective,
       at_least(0), "fsync the log when its oldest unflushed record is this old."),
    _t("follower.replication.throttled.replicas", LST, (), (), None, None,
       "Replicas throttled on the follower side (accepted, no quotas yet)."),
    _t("index.interval.bytes", I, 4096, ("log.index.interval.bytes",), _field("log.index.interval.bytes"),
       at_least(0), "Bytes of log between offset index entries."),
    _t("leader.replication.throttled.replicas", LST, (), (), None, None,
       "Replicas throttled on the leader side (accepted, no quotas yet)."),
    _t("max.compaction.lag.ms", L, INT64_MAX, ("log.cleaner.max.compaction.lag.ms",),
       _field("log.cleaner.max.compaction.lag.ms"), at_least(1), "Most time a record stays uncompacted."),
    _t("max.message.bytes", I, 1048588, ("message.max.bytes",), _field("message.max.bytes"), at_least(0),
       "Largest record batch the topic accepts."),
    _t("message.downconversion.enable", B, True, ("log.message.downconversion.enable",),
       _field("log.message.downconversion.enable"), None, "Accepted for compatibility; never down-converts."),
    _t("message.timestamp.after.max.ms", L, 3600000, ("log.message.timestamp.after.max.ms",),
       _field("log.message.timestamp.after.max.ms"), at_least(0),
       "Most a record's timestamp may be ahead of the broker's clock (CreateTime)."),
    _t("message.timestamp.before.max.ms", L, INT64_MAX, ("log.message.timestamp.before.max.ms",),
       _field("log.message.timestamp.before.max.ms"), at_least(0),
       "Most a record's timestamp may be behind the broker's clock (CreateTime)."),
    _t("message.timestamp.type", S, "CreateTime", ("log.message.timestamp.type",),
       _field("log.message.timestamp.type"), one_of("CreateTime", "LogAppendTime"),
       "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's.",
       ("CreateTime", "LogAppendTime")),
    _t("min.cleanable.dirty.ratio", D, 0.5, ("log.cleaner.min.cleanable.ratio",),
       _field("log.cleaner.min.cleanable.ratio"), between(0, 1), "Dirty ratio at which the log is compacted."),
    _t("min.compaction.lag.ms", L, 0, ("log.cleaner.min.compaction.lag.ms",),
       _field("log.cleaner.min.compaction.lag.ms"), at_least(0), "Least time a record stays uncompacted."),
    _t("min.insync.replicas", I, 1, ("min.insync.replicas",), _field("min.insync.replicas"), at_least(1),
       "Least ISR size for an acks=all produce to succeed."),
    _t("preallocate", B, False, ("log.preallocate",), _field("log.preallocate"), None,
       "Preallocate segment files on roll."),
    _t("retention.bytes", L, -1, ("log.retention.bytes",), _field("log.retention.bytes"), None,
       "Most bytes kept per partition before old segments are deleted; -1 unlimited."),
    _t("retention.ms", L, 604800000, ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
       lambda b: b.log_retention_ms_effective, at_least(-1),
       "How long records are kept before old segments are deleted; -1 unlimited."),
    _t("segment.bytes", I, 1073741824, ("log.segment.bytes",), _field("log.segment.bytes"),
       at_least(1024 * 1024), "Size at which a segment is rolled."),
    _t("segment.index.bytes", I, 10485760, ("log.index.size.max.bytes",), _field("log.index.size.max.bytes"),
       at_least(4), "Size of a segment's offset index."),
    _t("segment.jitter.ms", L, 0, ("log.roll.jitter.ms", "log.roll.jitter.hours"),
       lambda b: b.log_roll_jitter_ms_effective, at_least(0), "Random jitter subtracted from segment.ms."),
    _t("segment.ms", L, 604800000, ("log.roll.ms", "log.roll.hours"), lambda b: b.log_roll_ms_effective,
       at_least(1), "Time after which a segment is rolled even if not full."),
    _t("unclean.leader.election.enable", B, False, ("unclean.leader.election.enable",),
       _field("unclean.leader.election.enable"), None, "Allow an out-of-sync replica to become leader."),
)
TOPIC_CONFIGS: dict[str, TopicConfigDef] = {d.name: d for d in TOPIC_CONFIG_DEFS}


# Broker configs AlterConfigs may change at run time (Kafka's DynamicLogConfig: every broker
# synonym of a topic config, plus the cleaner's tuning).
DYNAMIC_BROKER_CONFIGS: frozenset[str] = frozenset(
    {s for d in TOPIC_CONFIG_DEFS for s in d.broker_synonyms} |
    {"log.cleaner.backoff.ms", "log.cleaner.dedupe.buffer.size"})


def validate_broker_configs(configs: dict[str, str | None]) -> str | None:
    """The INVALID_CONFIG message for the first bad dynamic broker config, or None."""
    for name, text in configs.items():
        definition = BROKER_CONFIGS.get(name)
        if definition is None:
            return f"Unknown broker config name: {name}"
        if name not in DYNAMIC_BROKER_CONFIGS:
            return f"Cannot update these configs dynamically: Set({name})"
        if text is None:
            continue
        try:
            definition.validator(parse_value(definition.config_type, text))
        except InvalidValue as exc:
            return f"Invalid value {text} for configuration {name}: {exc}"
    return None


def validate_topic_configs(configs: dict[str, str | None]) -> str | None:
    """The INVALID_CONFIG message for the first bad entry, or None when all are valid.

    A None value means "remove the override" and is valid here (CreateTopics refuses nulls
    itself). Unknown names are invalid, as in Kafka. min.compaction.lag.ms must not exceed
    max.compaction.lag.ms (the other taken from `configs` or its default).
    """
    parsed: dict[str, Any] = {}
    for name, text in configs.items():
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            return f"Unknown topic config name: {name}"
        if text is None:
            continue
        try:
            value = parse_value(definition.config_type, text)
            definition.validator(value)
        except InvalidValue as exc:
            return f"Invalid value {text} for configuration {name}: {exc}"
        parsed[name] = value
    min_lag = parsed.get("min.compaction.lag.ms", TOPIC_CONFIGS["min.compaction.lag.ms"].default)
    max_lag = parsed.get("max.compaction.lag.ms", TOPIC_CONFIGS["max.compaction.lag.ms"].default)
    if min_lag > max_lag:
        return (f"conflict topic config setting min.compaction.lag.ms ({min_lag}) > "
                f"max.compaction.lag.ms ({max_lag})")
    return None


def topic_config_value(broker: BrokerConfig, overrides: dict[str, str], name: str) -> Any:
    """The effective (parsed) value of topic config `name`: override > broker synonym > default."""
    definition = TOPIC_CONFIGS[name]
    text = overrides.get(name)
    if text is not None:
        try:
            value = parse_value(definition.config_type, text)
            definition.validator(value)
            return value
        except InvalidValue:
            pass
    if definition.broker_value is not None:
        return definition.broker_value(broker)
    return definition.default


# -- DescribeConfigs -------------------------------------------------------------------------
class ConfigSynonym(NamedTuple):
    name: str
    value: str | None
    source: int


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One DescribeConfigs result entry, in Kafka's terms (source, synonyms, type ints)."""

    name: str
    value: str | None
    source: int
    read_only: bool
    is_sensitive: bool
    synonyms: list[ConfigSynonym]
    config_type: int
    documentation: str | None


def describe_topic_configs(broker: BrokerConfig, overrides: dict[str, str],
                           keys: Iterable[str] | None = None) -> list[ConfigEntry]:
    """DescribeConfigs for a topic: every topic config (or `keys`), with source and synonyms.

    Synonyms in Kafka's order: the topic override (DYNAMIC_TOPIC_CONFIG), each broker synonym
    set in the static config (STATIC_BROKER_CONFIG), then each broker synonym with a default
    (DEFAULT_CONFIG). Unknown names in `keys` are left out, as Kafka does.
    """
    wanted = None if keys is None else set(keys)
    entries = []
    for definition in TOPIC_CONFIG_DEFS:
        if wanted is not None and definition.name not in wanted:
            continue
        synonyms: list[ConfigSynonym] = []
        override = overrides.get(definition.name)
        if override is not None:
            synonyms.append(ConfigSynonym(definition.name, override, ConfigSource.DYNAMIC_TOPIC_CONFIG))
        for synonym in definition.broker_synonyms:
            for text, source in broker.dynamic_configs.get(synonym, ()):
                synonyms.append(ConfigSynonym(synonym, text, source))
        for synonym in definition.broker_synonyms:
            if synonym in broker.static_configs:
                synonyms.append(ConfigSynonym(synonym, broker.static_configs[synonym],
                                              ConfigSource.STATIC_BROKER_CONFIG))
        for synonym in definition.broker_synonyms:
            broker_def = BROKER_CONFIGS[synonym]
            if broker_def.default is not None:
                synonyms.append(ConfigSynonym(synonym, format_value(broker_def.config_type, broker_def.default),
                                              ConfigSource.DEFAULT_CONFIG))
        value = topic_config_value(broker, overrides, definition.name)
        if synonyms:
            source = synonyms[0].source
        else:
            source = ConfigSource.DEFAULT_CONFIG
        entries.append(ConfigEntry(
            name=definition.name, value=format_value(definition.config_type, value), source=int(source),
            read_only=False, is_sensitive=definition.config_type is ConfigType.PASSWORD,
            synonyms=[ConfigSynonym(s.name, s.value, int(s.source)) for s in synonyms],
            config_type=int(definition.config_type), documentation=definition.doc))
    return entries


def describe_broker_configs(broker: BrokerConfig, keys: Iterable[str] | None = None) -> list[ConfigEntry]:
    """DescribeConfigs for this broker: every broker config (or `keys`), all read-only.

    Sources: DYNAMIC_BROKER_CONFIG / DYNAMIC_DEFAULT_BROKER_CONFIG (AlterConfigs, kept in the
    metadata log; see `BrokerConfig.with_dynamic_configs`), STATIC_BROKER_CONFIG (set in the
    properties file or overrides) or DEFAULT_CONFIG. Only DYNAMIC_BROKER_CONFIGS are writable
    (still reported read-only, unlike Kafka: tests/unit/test_config.py pins that). Synonyms list, for configs that combine
    (`log.retention.ms/minutes/hours`, `log.roll.*`, `log.dirs`/`log.dir`), every member that is
    set, then every member's default.
    """
    wanted = None if keys is None else set(keys)
    groups = {name: group for group in BROKER_SYNONYM_GROUPS for name in group}
    entries = []
    for definition in BROKER_CONFIG_DEFS:
        if wanted is not None and definition.name not in wanted:
            continue
        members = groups.get(definition.name, (definition.name,))
        synonyms: list[ConfigSynonym] = []
        for member in members:
            for text, source in broker.dynamic_configs.get(member, ()):
                synonyms.append(ConfigSynonym(member, text, source))
        for member in members:
            if member in broker.static_configs:
                synonyms.append(ConfigSynonym(member, broker.static_configs[member],
                                              int(ConfigSource.STATIC_BROKER_CONFIG)))
        for member in members:
            member_def = BROKER_CONFIGS[member]
            if member_def.default is not None:
                synonyms.append(ConfigSynonym(member, format_value(member_def.config_type, member_def.default),
                                              int(ConfigSource.DEFAULT_CONFIG)))
        if definition.name in broker.dynamic_configs:
            value, source = broker.dynamic_configs[definition.name][0]
        elif definition.name in broker.static_configs:
            value, source = broker.static_configs[definition.name], ConfigSource.STATIC_BROKER_CONFIG
        else:
            value = format_value(definition.config_type, definition.default)
            source = ConfigSource.DEFAULT_CONFIG
        entries.append(ConfigEntry(
            name=definition.name, value=value, source=int(source),
            read_only=definition.name not in DYNAMIC_BROKER_CONFIGS,
            is_sensitive=definition.config_type is ConfigType.PASSWORD, synonyms=synonyms,
            config_type=int(definition.config_type), documentation=definition.doc))
    return entries
