"""Crash loop: SIGKILL the broker at random moments while idempotent confluent-kafka producers
(acks=all, one codec each) write to several partitions; every acknowledged record must be read
back exactly once, at its acknowledged offset, in order per partition."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("confluent_kafka")

from odradek.protocol.apis import APIS
from odradek.testing.crashloop import CrashLoop

OFFSET_COMMIT = 8
# Committed group offsets are checked when the broker serves OffsetCommit.
GROUP_ID = "crashloop-group" if OFFSET_COMMIT in APIS else None

SEED = int(os.environ.get("ODRADEK_CRASHLOOP_SEED", "20261125"))


def test_crashloop_20_kills_lose_and_duplicate_nothing_acknowledged(tmp_path):
    loop = CrashLoop(
        str(tmp_path / "data"),
        kills=20,
        partitions=4,
        producers=5,
        seed=SEED,
        records_per_s=800,
        min_uptime_s=0.2,
        max_uptime_s=1.2,
        max_downtime_s=0.2,
        group_id=GROUP_ID,
    )
    report = loop.run()
    print(f"\n{report.summary()} seed={SEED}")
    report.check()
    assert report.kills == 20
    if GROUP_ID:
        assert report.group_offsets_checked and report.commits_acked > 0
    assert report.acked > 10_000


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_crashloop_200_kills(tmp_path):
    kills = int(os.environ.get("ODRADEK_CRASHLOOP_KILLS", "200"))
    loop = CrashLoop(
        str(tmp_path / "data"),
        kills=kills,
        partitions=8,
        producers=5,
        seed=SEED + 1,
        records_per_s=400,
        min_uptime_s=0.2,
        max_uptime_s=2.5,
        max_downtime_s=0.5,
        overrides={"log.segment.bytes": str(1024 * 1024)},
        group_id=GROUP_ID,
    )
    report = loop.run()
    print(f"\n{report.summary()} seed={SEED + 1}")
    report.check()
    assert report.kills == kills
