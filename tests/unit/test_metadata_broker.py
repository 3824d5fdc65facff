"""The metadata layer inside an in-process broker: topics made by the controller are hosted,
survive a restart, and vanish with their logs when deleted."""

from __future__ import annotations

import asyncio
import os

from odradek.broker.embedded import Broker
from odradek.metadata import controller
from odradek.protocol.errors import ErrorCode


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_created_topics_are_hosted_and_survive_a_restart(tmp_path):
    data_dir = str(tmp_path / "data")

    async def first_life():
        async with Broker(data_dir, num_partitions=2) as broker:
            core = broker.core
            [result] = await core.create_topics(
                [controller.CreatableTopic("orders", -1, -1, configs={"retention.ms": "60000"})], False)
            assert result.error is ErrorCode.none and result.num_partitions == 2
            [again] = await core.create_topics([controller.CreatableTopic("orders", 1)], False)
            assert again.error is ErrorCode.topic_already_exists
            assert core.replica_manager.get("orders", 1) is not None
            assert core.replica_manager.get("orders", 0).log.config.retention_ms == 60000
            assert await core.auto_create_topic("auto") is ErrorCode.none
            return core.cluster_id, core.image.topics_by_name["orders"].topic_id

    async def second_life(cluster_id, topic_id):
        async with Broker(data_dir) as broker:
            core = broker.core
            assert core.cluster_id == cluster_id
            topic = core.image.topics_by_name["orders"]
            assert topic.topic_id == topic_id and topic.configs == {"retention.ms": "60000"}
            assert sorted(core.image.topics_by_name) == ["auto", "orders"]
            assert core.replica_manager.get("orders", 1) is not None

    run(second_life(*run(first_life())))


def test_deleted_topics_lose_their_partitions(tmp_path):
    data_dir = str(tmp_path / "data")

    async def scenario():
        async with Broker(data_dir) as broker:
            core = broker.core
            await core.create_topics([controller.CreatableTopic("doomed", 2)], False)
            assert os.path.isdir(os.path.join(data_dir, "doomed-0"))
            records, [result] = controller.delete_topics(core.image, ["doomed"], core.config)
            assert result.error is ErrorCode.none
            await core.apply_metadata(records)
            assert "doomed" not in core.image.topics_by_name
            assert core.replica_manager.get("doomed", 0) is None
            assert not os.path.isdir(os.path.join(data_dir, "doomed-0"))

    run(scenario())
