"""BrokerConfig loading, Kafka precedence rules, topic config validation and DescribeConfigs."""

from __future__ import annotations

import pytest

from odradek.config import (
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigError,
    ConfigSource,
    ConfigType,
    Listener,
    describe_broker_configs,
    describe_topic_configs,
    parse_listeners,
    parse_properties,
    validate_topic_configs,
)
from odradek.storage.log_config import LogConfig


def load(**overrides: str) -> BrokerConfig:
    config, _ = BrokerConfig.load(None, {k.replace("_", "."): v for k, v in overrides.items()})
    return config


# -- Java properties ---------------------------------------------------------------------------
def test_properties_comments_separators_and_whitespace():
    text = (
        "# a comment\n"
        "! another comment\n"
        "\n"
        "   a=1\n"
        "b: 2\n"
        "c 3\n"
        "d   =   four  \n"
        "e=\n"
        "f\n"
    )
    assert parse_properties(text) == {"a": "1", "b": "2", "c": "3", "d": "four  ", "e": "", "f": ""}


def test_properties_line_continuations_drop_leading_whitespace_of_next_line():
    text = "listeners=PLAINTEXT://:9092,\\\n          CONTROLLER://:9093\nnext=1\n"
    assert parse_properties(text) == {"listeners": "PLAINTEXT://:9092,CONTROLLER://:9093", "next": "1"}


def test_properties_even_backslashes_do_not_continue():
    assert parse_properties("a=x\\\\\nb=y") == {"a": "x\\", "b": "y"}


def test_properties_escapes_in_keys_and_values():
    text = "my\\=key=v\\u0041l\\tue\nwith\\ space:ok\ncolon\\:key = \\#not-a-comment\n"
    assert parse_properties(text) == {"my=key": "vAl\tue", "with space": "ok", "colon:key": "#not-a-comment"}


def test_properties_crlf_and_later_duplicate_wins():
    assert parse_properties("a=1\r\nb=2\r\na=3\r\n") == {"a": "3", "b": "2"}


def test_properties_comment_line_ending_in_backslash_does_not_continue():
    assert parse_properties("# comment \\\na=1") == {"a": "1"}


# -- loading -----------------------------------------------------------------------------------
def test_defaults_are_kafkas_except_the_documented_ones():
    config = BrokerConfig()
    assert config.node_id == 1
    assert config.listeners == (Listener("PLAINTEXT", "127.0.0.1", 9092),)
    assert config.log_dirs == ("./odradek-data",)
    assert config.num_partitions == 1 and config.default_replication_factor == 1
    assert config.auto_create_topics_enable is True
    assert config.message_max_bytes == 1048588
    assert config.socket_request_max_bytes == 104857600
    assert config.offsets_topic_num_partitions == 50
    assert config.log_segment_bytes == 1073741824
    assert config.log_retention_ms_effective == 7 * 24 * 3600 * 1000
    assert config.log_roll_ms_effective == 7 * 24 * 3600 * 1000
    assert config.group_initial_rebalance_delay_ms == 3000
    assert config.compression_type == "producer"
    assert BrokerConfig.load(None, {})[0] == config


def test_load_reads_file_then_overrides_win(tmp_path):
    path = tmp_path / "server.properties"
    path.write_text("num.partitions=3\nlog.dirs=/data/a, /data/b\nnode.id=7\n")
    config, warnings = BrokerConfig.load(str(path), {"num.partitions": "5"})
    assert warnings == []
    assert config.num_partitions == 5
    assert config.node_id == 7
    assert config.log_dirs == ("/data/a", "/data/b")
    assert config.static_configs["num.partitions"] == "5"


def test_unknown_keys_warn_once_each_and_are_ignored():
    config, warnings = BrokerConfig.load(None, {"num.network.threads": "3", "socket.send.buffer.bytes": "102400",
                                                "num.partitions": "2"})
    assert config.num_partitions == 2
    assert len(warnings) == 2
    assert any("num.network.threads" in w for w in warnings)
    assert any("socket.send.buffer.bytes" in w for w in warnings)


def test_kafkas_stock_kraft_server_properties_loads(tmp_path):
    path = tmp_path / "server.properties"
    path.write_text(
        "process.roles=broker,controller\n"
        "node.id=1\n"
        "controller.quorum.bootstrap.servers=localhost:9093\n"
        "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n"
        "inter.broker.listener.name=PLAINTEXT\n"
        "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL\n"
        "num.network.threads=3\n"
        "num.io.threads=8\n"
        "log.dirs=/tmp/kraft-combined-logs\n"
        "num.partitions=1\n"
        "offsets.topic.replication.factor=1\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "log.retention.hours=168\n"
        "log.segment.bytes=1073741824\n"
        "log.retention.check.interval.ms=300000\n"
    )
    config, warnings = BrokerConfig.load(str(path), {})
    assert config.listeners == (Listener("PLAINTEXT", "", 9092),)
    assert config.controller_listeners == (Listener("CONTROLLER", "", 9093),)
    assert config.advertised_listeners == (Listener("PLAINTEXT", "localhost", 9092),)
    assert config.log_dirs == ("/tmp/kraft-combined-logs",)
    assert sorted(w.split("=")[0].split()[-1] for w in warnings) == ["num.io.threads", "num.network.threads"]


@pytest.mark.parametrize("key, value, reason", [
    ("num.partitions", "abc", "Not a number of type INT"),
    ("num.partitions", "0", "Value must be at least 1"),
    ("num.partitions", "1.5", "Not a number of type INT"),
    ("message.max.bytes", "99999999999", "Not a number of type INT"),
    ("auto.create.topics.enable", "yes", "Expected value to be either true or false"),
    ("log.cleanup.policy", "delete,shred", "String must be one of: compact, delete"),
    ("log.message.timestamp.type", "createtime", "String must be one of: CreateTime, LogAppendTime"),
    ("compression.type", "brotli", "String must be one of"),
    ("log.segment.bytes", "1024", "Value must be at least 1048576"),
    ("log.cleaner.min.cleanable.ratio", "1.5", "Value must be no more than 1"),
    ("node.id", "-1", "Value must be at least 0"),
])
def test_invalid_values_of_known_keys_raise_one_line_naming_the_key(key, value, reason):
    with pytest.raises(ConfigError) as excinfo:
        BrokerConfig.load(None, {key: value})
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"Invalid value {value} for configuration {key}: ")
    assert reason in message


def test_values_are_trimmed_and_booleans_case_insensitive():
    config = load(num_partitions=" 4 ", auto_create_topics_enable="FALSE")
    assert config.num_partitions == 4
    assert config.auto_create_topics_enable is False


def test_broker_id_is_node_id_and_must_agree():
    assert BrokerConfig.load(None, {"broker.id": "3"})[0].node_id == 3
    assert BrokerConfig.load(None, {"broker.id": "3", "node.id": "3"})[0].node_id == 3
    with pytest.raises(ConfigError, match="broker.id"):
        BrokerConfig.load(None, {"broker.id": "3", "node.id": "4"})


def test_log_dirs_over_log_dir():
    assert load(log_dir="/one").log_dirs == ("/one",)
    assert BrokerConfig.load(None, {"log.dir": "/one", "log.dirs": "/two"})[0].log_dirs == ("/two",)


def test_cluster_id_extension_is_validated():
    assert BrokerConfig.load(None, {"cluster.id": "MkU3OEVBNTcwNTJENDM2Qg"})[0].cluster_id == "MkU3OEVBNTcwNTJENDM2Qg"
    with pytest.raises(ConfigError, match="cluster.id"):
        BrokerConfig.load(None, {"cluster.id": "has space"})


def test_group_session_timeouts_must_be_ordered():
    with pytest.raises(ConfigError, match="group.min.session.timeout.ms"):
        BrokerConfig.load(None, {"group.min.session.timeout.ms": "10000", "group.max.session.timeout.ms": "5000"})


# -- listeners ---------------------------------------------------------------------------------
def test_listeners_empty_host_port_zero_and_ipv6():
    assert parse_listeners("PLAINTEXT://:0,internal://[::1]:9093,EXTERNAL://example.com:19092") == (
        Listener("PLAINTEXT", "", 0), Listener("INTERNAL", "::1", 9093), Listener("EXTERNAL", "example.com", 19092))


@pytest.mark.parametrize("value", ["localhost:9092", "PLAINTEXT://host", "PLAINTEXT://host:99999",
                                   "PLAINTEXT://:9092,PLAINTEXT://:9093", "A://:9092,B://:9092"])
def test_bad_listeners_are_config_errors(value):
    with pytest.raises(ConfigError, match="listeners"):
        parse_listeners(value)


def test_listener_security_protocols():
    config = BrokerConfig.load(None, {"listeners": "INTERNAL://:0,EXTERNAL://:0",
                                      "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"})[0]
    assert [l.name for l in config.listeners] == ["INTERNAL", "EXTERNAL"]
    with pytest.raises(ConfigError, match="PLAINTEXT only"):
        BrokerConfig.load(None, {"listeners": "SSL://:9093"})
    with pytest.raises(ConfigError, match="no security protocol"):
        BrokerConfig.load(None, {"listeners": "INTERNAL://:9093"})


def test_advertised_listeners_must_name_listeners_and_be_routable():
    with pytest.raises(ConfigError, match="advertised.listeners"):
        BrokerConfig.load(None, {"listeners": "PLAINTEXT://:0", "advertised.listeners": "OTHER://h:1"})
    with pytest.raises(ConfigError, match="meta-address"):
        BrokerConfig.load(None, {"listeners": "PLAINTEXT://:0", "advertised.listeners": "PLAINTEXT://0.0.0.0:1"})
    config = load(listeners="PLAINTEXT://:0")
    assert config.advertised_listeners == ()  # unset: clients get the listeners as bound


# -- precedence --------------------------------------------------------------------------------
def test_retention_ms_over_minutes_over_hours():
    assert load(log_retention_hours="1").log_retention_ms_effective == 3_600_000
    assert load(log_retention_hours="1", log_retention_minutes="2").log_retention_ms_effective == 120_000
    assert load(log_retention_hours="1", log_retention_minutes="2",
                log_retention_ms="5").log_retention_ms_effective == 5
    assert load(log_retention_ms="-7").log_retention_ms_effective == -1
    assert load(log_retention_hours="-1").log_retention_ms_effective == -1


def test_roll_ms_over_hours_and_flush_interval_defaults_to_scheduler():
    assert load(log_roll_hours="2").log_roll_ms_effective == 7_200_000
    assert load(log_roll_hours="2", log_roll_ms="1000").log_roll_ms_effective == 1000
    assert load(log_roll_jitter_hours="1").log_roll_jitter_ms_effective == 3_600_000
    assert load(log_flush_scheduler_interval_ms="500").log_flush_interval_ms_effective == 500
    assert load(log_flush_scheduler_interval_ms="500",
                log_flush_interval_ms="50").log_flush_interval_ms_effective == 50


# -- topic configs -----------------------------------------------------------------------------
def test_log_config_topic_override_beats_broker_default_beats_kafka_default():
    config = load(log_segment_bytes=str(2 * 1024 * 1024), log_retention_minutes="10", log_cleanup_policy="compact")
    assert BrokerConfig().log_config({}) == LogConfig()
    log_config = config.log_config({"segment.bytes": str(4 * 1024 * 1024), "message.timestamp.type": "LogAppendTime"})
    assert log_config.segment_bytes == 4 * 1024 * 1024
    assert log_config.retention_ms == 600_000
    assert log_config.cleanup_policy == ("compact",)
    assert log_config.log_append_time
    assert config.log_config({}).segment_bytes == 2 * 1024 * 1024


def test_log_config_maps_every_field_it_can():
    config = load(message_max_bytes="2000", log_flush_interval_messages="1", log_preallocate="true",
                  log_segment_delete_delay_ms="5", log_index_interval_bytes="10", log_index_size_max_bytes="4096",
                  log_retention_bytes="100")
    lc = config.log_config({"flush.ms": "7"})
    assert (lc.max_message_bytes, lc.flush_messages, lc.flush_ms, lc.preallocate) == (2000, 1, 7, True)
    assert (lc.file_delete_delay_ms, lc.index_interval_bytes, lc.segment_index_bytes, lc.retention_bytes) == \
        (5, 10, 4096, 100)


def test_log_config_ignores_an_override_that_no_longer_parses():
    assert BrokerConfig().log_config({"segment.bytes": "nonsense"}).segment_bytes == LogConfig().segment_bytes


def test_validate_topic_configs_accepts_valid_and_null():
    assert validate_topic_configs({}) is None
    assert validate_topic_configs({"cleanup.policy": "compact,delete", "retention.ms": "-1",
                                   "min.cleanable.dirty.ratio": "0.1", "preallocate": "true",
                                   "compression.type": "zstd", "retention.bytes": "-1"}) is None
    assert validate_topic_configs({"retention.ms": None}) is None


@pytest.mark.parametrize("configs, expected", [
    ({"no.such.config": "1"}, "Unknown topic config name: no.such.config"),
    ({"retention.ms": "soon"}, "Invalid value soon for configuration retention.ms: Not a number of type LONG"),
    ({"retention.ms": "-2"}, "Invalid value -2 for configuration retention.ms: Value must be at least -1"),
    ({"segment.bytes": "100"}, "Invalid value 100 for configuration segment.bytes: Value must be at least 1048576"),
    ({"cleanup.policy": "shred"}, "Invalid value shred for configuration cleanup.policy: "
                                  "String must be one of: compact, delete"),
    ({"preallocate": "maybe"}, "Invalid value maybe for configuration preallocate: "
                               "Expected value to be either true or false"),
    ({"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"},
     "conflict topic config setting min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"),
])
def test_validate_topic_configs_messages(configs, expected):
    assert validate_topic_configs(configs) == expected


def test_topic_config_table_has_kafkas_configs_with_broker_synonyms_that_exist():
    for name in ["cleanup.policy", "compression.type", "delete.retention.ms", "file.delete.delay.ms",
                 "flush.messages", "flush.ms", "index.interval.bytes", "max.compaction.lag.ms",
                 "max.message.bytes", "message.timestamp.type", "message.timestamp.before.max.ms",
                 "message.timestamp.after.max.ms", "min.cleanable.dirty.ratio", "min.compaction.lag.ms",
                 "min.insync.replicas", "preallocate", "retention.bytes", "retention.ms", "segment.bytes",
                 "segment.index.bytes", "segment.jitter.ms", "segment.ms", "unclean.leader.election.enable",
                 "message.downconversion.enable"]:
        assert name in TOPIC_CONFIGS
    for definition in TOPIC_CONFIGS.values():
        for synonym in definition.broker_synonyms:
            assert synonym in BROKER_CONFIGS, synonym
        assert definition.doc


# -- DescribeConfigs ---------------------------------------------------------------------------
def test_describe_topic_config_sources_and_synonyms_in_kafkas_order():
    config = load(log_retention_minutes="30")
    [entry] = describe_topic_configs(config, {"retention.ms": "1000"}, keys=["retention.ms"])
    assert (entry.name, entry.value, entry.source) == ("retention.ms", "1000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert entry.synonyms == [("retention.ms", "1000", 1), ("log.retention.minutes", "30", 4),
                              ("log.retention.hours", "168", 5)]
    assert entry.config_type == ConfigType.LONG and not entry.read_only and not entry.is_sensitive

    [entry] = describe_topic_configs(config, {}, keys=["retention.ms"])
    assert (entry.value, entry.source) == ("1800000", ConfigSource.STATIC_BROKER_CONFIG)

    [entry] = describe_topic_configs(BrokerConfig(), {}, keys=["retention.ms"])
    assert (entry.value, entry.source) == ("604800000", ConfigSource.DEFAULT_CONFIG)
    assert entry.synonyms == [("log.retention.hours", "168", 5)]


def test_describe_topic_configs_all_and_unknown_keys():
    entries = describe_topic_configs(BrokerConfig(), {})
    assert {e.name for e in entries} == set(TOPIC_CONFIGS)
    by_name = {e.name: e for e in entries}
    assert by_name["cleanup.policy"].value == "delete" and by_name["cleanup.policy"].config_type == ConfigType.LIST
    assert by_name["min.cleanable.dirty.ratio"].value == "0.5"
    assert by_name["preallocate"].value == "false" and by_name["preallocate"].config_type == ConfigType.BOOLEAN
    assert describe_topic_configs(BrokerConfig(), {}, keys=["nope"]) == []


def test_describe_broker_configs():
    config = load(num_partitions="3", log_retention_hours="2")
    by_name = {e.name: e for e in describe_broker_configs(config)}
    assert (by_name["num.partitions"].value, by_name["num.partitions"].source) == ("3", ConfigSource.STATIC_BROKER_CONFIG)
    assert (by_name["default.replication.factor"].value,
            by_name["default.replication.factor"].source) == ("1", ConfigSource.DEFAULT_CONFIG)
    # Dynamic broker configs are writable (AlterConfigs), the rest read-only, as Kafka reports.
    assert by_name["num.partitions"].read_only
    assert not by_name["log.retention.ms"].read_only and not by_name["message.max.bytes"].read_only
    assert by_name["log.retention.ms"].value is None
    assert by_name["log.retention.ms"].synonyms == [("log.retention.hours", "2", 4), ("log.retention.hours", "168", 5)]
    assert [e.name for e in describe_broker_configs(config, keys=["num.partitions"])] == ["num.partitions"]
