"""`odradek cluster status | reassign | elect-leaders` against a single embedded broker: the CLI
and the handlers end to end (the cluster-mode runs are in tests/cluster/test_reassignment.py)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

try:
    import odradek.broker.server  # noqa: F401
    from odradek.broker.embedded import Broker
except ImportError:  # pragma: no cover
    pytest.skip("the broker is not available", allow_module_level=True)

from tests.unit.test_cli import run_cli


@pytest.fixture(scope="module")
def broker():
    running = Broker(num_partitions=2, auto_create_topics_enable=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cluster-cli-broker", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(running.start(), loop).result(30)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def topic(broker):
    name = f"cc-{uuid.uuid4().hex[:8]}"
    code, _, err = run_cli(["topics", "create", name, "--partitions", "2", "--bootstrap-server", broker.bootstrap])
    assert code == 0, err
    return name


def cli(broker, *argv):
    code, out, err = run_cli(["cluster", *argv, "--bootstrap-server", broker.bootstrap])
    return code, out.decode(), err


def test_status_lists_the_broker_the_controller_and_each_partition(broker, topic):
    code, out, err = cli(broker, "status", "--topic", topic)
    assert code == 0, err
    assert "Brokers: 1" in out
    assert f"Topic: {topic}\tPartitionCount: 2\tReplicationFactor: 1" in out
    assert f"\tTopic: {topic}\tPartition: 1\tLeader: " in out
    assert "Partitions: 2\tUnder-replicated: 0\tOffline: 0\tReassigning: 0" in out


def test_reassign_to_this_broker_succeeds_and_elsewhere_is_refused(broker, topic):
    code, out, _ = cli(broker, "status", "--topic", topic)
    node = out.split("\tBroker: ")[1].split("\t")[0]
    code, out, err = cli(broker, "reassign", "--topic", topic, "--partition", "0", "--replicas", node, "--wait")
    assert code == 0, err
    assert "Successfully started" in out and "completed" in out
    code, out, err = cli(broker, "reassign", "--topic", topic, "--partition", "0", "--replicas", "4242")
    assert code == 1
    assert "INVALID_REPLICA_ASSIGNMENT" in err and "4242" in err
    code, out, err = cli(broker, "reassign", "--topic", topic, "--partition", "0", "--cancel")
    assert code == 1 and "NO_REASSIGNMENT_IN_PROGRESS" in err
    code, out, err = cli(broker, "reassign", "--list")
    assert (code, out.strip()) == (0, "No partition reassignments in progress.")


def test_reassign_usage_errors(broker):
    code, _, err = cli(broker, "reassign", "--replicas", "1")
    assert code == 2 and "--topic" in err
    with pytest.raises(SystemExit):
        cli(broker, "reassign", "--topic", "t", "--partition", "0", "--replicas", "a,b")


def test_elect_leaders_needs_no_election_on_one_node(broker, topic):
    code, out, err = cli(broker, "elect-leaders", "--topic", topic)
    assert code == 0, err
    assert "Valid replica already elected" in out
