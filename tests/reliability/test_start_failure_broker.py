"""A whole broker core (metadata log, partitions, group offsets, retention, the cleaner) must open
after a kill between any two of its system calls (issue #5: a start failed once with "No such file
or directory" in a 200-kill crash loop).

The core runs over the fake filesystem (tests/storage/fakefs.py): topics are created, written,
deleted and re-created, offsets committed to __consumer_offsets (compacted, small segments),
retention and cleaner passes run, checkpoints are written. `kill_after_ops(n)` stops the process
before its n-th mutating call; the page cache survives (SIGKILL). A new core on the same files
must open, serve its partitions, and close cleanly. The workload runs on the real clock, so the
count of calls may differ a little between the counting run and the killed one: a run that ends
before its kill point is restarted after a SIGKILL all the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from odradek.broker.core import BrokerCore
from odradek.broker.group_service import OFFSETS_TOPIC
from odradek.config import BrokerConfig
from odradek.coordinator.messages import OffsetCommitPartition, OffsetCommitRequest
from odradek.metadata.controller import CreatableTopic
from odradek.protocol.records import build_batch, validate_batch
from odradek.runtime.clock import now_ms
from odradek.storage.log_manager import LogManager
from tests.storage.fakefs import CrashPlan, FakeFileSystem, ProcessKilled

SEEDS = 40
STEP_TIMEOUT_S = 5.0
STEPS = 40
TOPICS = ("t", "r")
TOPIC_CONFIGS = {"t": {}, "r": {"retention.bytes": "1200", "file.delete.delay.ms": "0"}}
SEGMENT_BYTES = 400  # below segment.bytes' 1 MiB minimum (Kafka 4's): patched into every LogConfig


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    """Every log the broker configures rolls at SEGMENT_BYTES, so a short run rolls, retains
    and cleans (the config validation refuses such a segment.bytes)."""
    original = BrokerConfig.log_config

    def log_config(self, topic_configs=None):
        return dataclasses.replace(original(self, topic_configs), segment_bytes=SEGMENT_BYTES)

    monkeypatch.setattr(BrokerConfig, "log_config", log_config)


def broker_config() -> BrokerConfig:
    cfg, _ = BrokerConfig.load(None, {
        "log.dirs": "/data",
        "num.partitions": "2",
        "log.index.interval.bytes": "64",
        "log.retention.check.interval.ms": "1",
        "file.delete.delay.ms": "0",
        "log.cleaner.backoff.ms": "0",
        "log.cleaner.min.cleanable.ratio": "0.01",
        "offsets.topic.num.partitions": "2",
        "group.initial.rebalance.delay.ms": "0",
    })
    return cfg


def core_on(fs: FakeFileSystem) -> BrokerCore:
    core = BrokerCore(broker_config())
    core.fs = fs
    core.log_manager = LogManager(fs, core.config.log_dirs, now_ms())
    return core


async def workload(core: BrokerCore, seed: int) -> None:
    """The steps; a kill inside a background task (the group coordinator's writer logs and
    swallows it) leaves the awaiting step waiting: each step is bounded, and a step that ends
    or times out after the kill ends the run as the kill would have."""
    fs = core.fs
    core.open()
    await asyncio.wait_for(core.auto_create_topic(OFFSETS_TOPIC), STEP_TIMEOUT_S)
    for topic in TOPICS:
        await asyncio.wait_for(create(core, topic), STEP_TIMEOUT_S)
    rng = random.Random(seed)
    state = {"sequence": 0}
    for _ in range(STEPS):
        try:
            await asyncio.wait_for(step(core, rng, state), STEP_TIMEOUT_S)
        except TimeoutError:
            if not fs.killed:
                raise
        if fs.killed:
            raise ProcessKilled("killed in a background task")


async def step(core: BrokerCore, rng: random.Random, state: dict) -> None:
    sequence = state["sequence"]
    roll = rng.random()
    topic = rng.choice(TOPICS)
    if roll < 0.5:
        partition = core.replica_manager.get(topic, rng.randrange(2))
        if partition is None:
            return
        batch = bytearray(build_batch([(b"k", b"v%d" % sequence + b"x" * rng.randrange(80), [], now_ms())]))
        state["sequence"] = sequence + 1
        header = validate_batch(batch, 0, len(batch))
        partition.log.append(batch, header, leader_epoch=partition.leader_epoch, now_ms=now_ms())
        partition.log.update_high_watermark(partition.log.log_end_offset)
    elif roll < 0.65:
        await core.groups.call("offset_commit", OffsetCommitRequest(
            f"g{rng.randrange(3)}", {topic: (OffsetCommitPartition(rng.randrange(2), sequence),)}))
    elif roll < 0.75:
        await core.checkpoint()
    elif roll < 0.9:
        await core.log_lifecycle_due()
        if core._cleaner_task is not None:
            await core._cleaner_task  # the fake filesystem takes one thread at a time
    elif roll < 0.95:
        await core.delete_topics([topic])
    else:
        await create(core, topic)


async def create(core: BrokerCore, topic: str) -> None:
    await core.create_topics([CreatableTopic(topic, num_partitions=2, replication_factor=1,
                                             configs=dict(TOPIC_CONFIGS[topic]))], False)


def run_workload(fs: FakeFileSystem, seed: int) -> BrokerCore:
    core = core_on(fs)
    asyncio.run(workload(core, seed))
    return core


def kill_and_restart(seed: int) -> None:
    counting = FakeFileSystem()
    run_workload(counting, seed).close()
    total = counting.mutating_ops
    fs = FakeFileSystem()
    kill_at = random.Random(seed * 7919).randrange(total)
    fs.kill_after_ops(kill_at)
    try:
        run_workload(fs, seed)
    except ProcessKilled:
        pass
    fs.crash(plan=CrashPlan(default_file_ops="all", default_dir_ops="all"))
    core = core_on(fs)
    try:
        core.open()
    except Exception as exc:
        names = sorted(fs.files)
        raise AssertionError(f"seed={seed} kill_at={kill_at}/{total}: the broker did not start: {exc!r}\n"
                             + "\n".join(names)) from exc
    for topic in core.image.topics_by_name.values():  # every partition in the metadata is served
        for index in topic.partitions:
            assert core.replica_manager.get(topic.name, index) is not None, (seed, topic.name, index)
    core.close()
    again = core_on(fs)
    again.open()  # and after the clean shutdown
    again.close()


def test_the_workload_runs():
    fs = FakeFileSystem()
    core = run_workload(fs, 3)
    core.close()
    assert fs.mutating_ops > 200, fs.mutating_ops
    renamed = fs.files
    assert any(p.endswith(".snapshot") for p in renamed)


@pytest.mark.parametrize("chunk", range(4))
def test_a_broker_killed_between_any_two_system_calls_starts_again(chunk):
    for seed in range(chunk, SEEDS, 4):
        kill_and_restart(seed)
