"""The hand-written Fetch response encoder matches kio byte for byte, for every version."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest

from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode
from odradek.protocol.fetch_response import PartitionData, TopicData, encode
from odradek.protocol.records import build_batch


class Region:
    """Stands in for a file region: only its size and bytes matter to the encoder."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size_bytes = len(data)


def scenario():
    batch = build_batch([(b"k", b"v" * 300, [], 1000)])
    tid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    return [
        TopicData("orders", tid, [
            PartitionData(0, 0, 10, 10, 0, None, -1, batch),
            PartitionData(1, ErrorCode.offset_out_of_range.value, 5, 5, 2, [(7, 3), (8, 4)], -1, b""),
            PartitionData(2, 0, 0, 0, 0, [], -1, None),
        ]),
        TopicData("other", uuid.UUID(int=5), []),
    ]


def kio_bytes(version, topics, session_id):
    module = apis.response_module(1, version)
    cls, writer, _ = apis.response_codec(1, version)

    def part(p):
        aborted = None if p.aborted_transactions is None else tuple(
            apis.make(module.AbortedTransaction, producer_id=a, first_offset=b) for a, b in p.aborted_transactions)
        return apis.make(module.PartitionData, partition_index=p.partition_index,
                         error_code=ErrorCode(p.error_code), high_watermark=p.high_watermark,
                         last_stable_offset=p.last_stable_offset, log_start_offset=p.log_start_offset,
                         aborted_transactions=aborted, preferred_read_replica=p.preferred_read_replica,
                         records=p.records if p.records is None else bytes(p.records))

    response = apis.make(cls, throttle_time=timedelta(milliseconds=3), error_code=ErrorCode.none,
                         session_id=session_id, responses=tuple(
                             apis.make(module.FetchableTopicResponse, topic=t.topic, topic_id=t.topic_id,
                                       partitions=tuple(part(p) for p in t.partitions)) for t in topics))
    buffer = io.BytesIO()
    writer(buffer, response)
    return buffer.getvalue()


@pytest.mark.parametrize("version", range(4, 19))
def test_encoder_matches_kio(version):
    topics = scenario()
    expected = kio_bytes(version, topics, 77)
    # Give the first partition's records as a region, as the broker does.
    topics[0].partitions[0].records = Region(topics[0].partitions[0].records)
    parts = encode(version, 3, 0, 77, topics)
    got = b"".join(p if isinstance(p, bytes) else p.data for p in parts)
    assert got == expected
    assert any(isinstance(p, Region) for p in parts)
