"""`odradek configs describe|alter` against a real broker process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from odradek.testing.process import BrokerProcess


@pytest.fixture(scope="module")
def configs_broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("configs"))) as process:
        yield process


def odradek(broker, *args):
    result = subprocess.run([sys.executable, "-m", "odradek", *args, "--bootstrap-server", broker.bootstrap],
                            capture_output=True, text=True, timeout=30, check=False)
    return result.returncode, result.stdout, result.stderr


def test_cli_configs_alter_then_describe_a_topic(configs_broker):
    assert odradek(configs_broker, "topics", "create", "cfg-topic")[0] == 0
    code, out, err = odradek(configs_broker, "configs", "alter", "--topic", "cfg-topic",
                             "--add-config", "retention.ms=123456,cleanup.policy=[compact,delete]")
    assert code == 0, err
    code, out, _ = odradek(configs_broker, "configs", "describe", "--topic", "cfg-topic")
    assert code == 0
    assert "retention.ms=123456 source=DYNAMIC_TOPIC_CONFIG" in out
    assert "cleanup.policy=compact,delete source=DYNAMIC_TOPIC_CONFIG" in out
    assert "segment.bytes" not in out  # only dynamic configs without --all
    code, out, _ = odradek(configs_broker, "configs", "alter", "--topic", "cfg-topic",
                           "--delete-config", "retention.ms", "--subtract-config", "cleanup.policy=delete")
    assert code == 0
    out = odradek(configs_broker, "configs", "describe", "--topic", "cfg-topic", "--all")[1]
    assert "retention.ms=604800000 source=DEFAULT_CONFIG" in out
    assert "cleanup.policy=compact source=DYNAMIC_TOPIC_CONFIG" in out


def test_cli_configs_invalid_value_is_an_error_with_the_brokers_message(configs_broker):
    code, _, err = odradek(configs_broker, "configs", "alter", "--broker-defaults",
                           "--add-config", "log.retention.ms=abc")
    assert code != 0 and "INVALID_CONFIG" in err and "log.retention.ms" in err
    code, _, err = odradek(configs_broker, "configs", "alter", "--broker", "1", "--add-config", "node.id=3")
    assert code != 0 and "INVALID_CONFIG" in err


def test_cli_configs_broker_defaults_show_as_synonyms_of_topic_configs(configs_broker):
    assert odradek(configs_broker, "topics", "create", "cfg-defaults")[0] == 0
    code, _, err = odradek(configs_broker, "configs", "alter", "--broker-defaults",
                           "--add-config", "log.retention.bytes=987654321")
    assert code == 0, err
    out = odradek(configs_broker, "configs", "describe", "--broker-defaults")[1]
    assert "log.retention.bytes=987654321 source=DYNAMIC_DEFAULT_BROKER_CONFIG" in out
    out = odradek(configs_broker, "configs", "describe", "--topic", "cfg-defaults", "--all")[1]
    assert ("retention.bytes=987654321 source=DYNAMIC_DEFAULT_BROKER_CONFIG "
            "synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.bytes=987654321, "
            "DEFAULT_CONFIG:log.retention.bytes=-1}") in out
