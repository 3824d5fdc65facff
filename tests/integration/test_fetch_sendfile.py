"""Fetch responses leave the segment files by `sendfile`, even when the client reads slowly.

The broker sends a file region with `sendfile` while the transport has nothing queued; when the
socket fills up it waits until the socket is writable and goes on with `sendfile` (no copy of the
rest into memory). These tests read multi-MiB responses through a small receive buffer, so the
broker's socket fills again and again, under uvloop and under the stock asyncio loop, and check:
the bytes arrive whole and in order (every batch's CRC, every value, the pipelined responses after
it), nothing was copied with `pread`, and a client that hangs up in the middle of a region costs
nothing (no descriptor left open, the broker serves the next client).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
import uuid
from datetime import timedelta

import pytest

from odradek.broker import connection as connection_module
from odradek.broker import server as server_module
from odradek.broker.embedded import Broker
from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.testing.raw import RawConnection, decode_response, encode_request

VALUE_BYTES = 60_000
BATCHES_PER_PARTITION = 40  # ~2.3 MiB per partition
PARTITIONS = 2
QUITTER_BATCHES_PER_PARTITION = 100  # ~5.7 MiB per partition
SMALL_RCVBUF = 8192


class CountingOs:
    """The `os` module as the connection module sees it, counting `sendfile` and `pread` calls."""

    def __init__(self) -> None:
        self.sendfile_calls = 0
        self.pread_calls = 0
        self.duplicates: set[int] = set()  # descriptors from `dup` not closed yet
        self.dup_calls = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def sendfile(self, *args):
        self.sendfile_calls += 1
        return os.sendfile(*args)

    def pread(self, *args):
        self.pread_calls += 1
        return os.pread(*args)

    def dup(self, fd):
        self.dup_calls += 1
        new = os.dup(fd)
        self.duplicates.add(new)
        return new

    def close(self, fd):
        self.duplicates.discard(fd)
        return os.close(fd)


@pytest.fixture(params=["uvloop", "asyncio"])
def broker(request, monkeypatch):
    if request.param == "asyncio":
        monkeypatch.setattr(server_module, "new_event_loop", asyncio.new_event_loop)
    else:
        pytest.importorskip("uvloop")
    counting = CountingOs()
    monkeypatch.setattr(connection_module, "os", counting)
    b = Broker().start_in_thread()
    b.counting_os = counting
    yield b
    b.stop_thread()


def _value(partition: int, index: int) -> bytes:
    return bytes([65 + partition]) * 8 + index.to_bytes(4, "big") + b"x" * (VALUE_BYTES - 12)


def _fill(bootstrap: str, topic: str, batches: int = BATCHES_PER_PARTITION) -> None:
    with RawConnection(bootstrap) as conn:
        create = conn.module("create_topics", 7)
        response = conn.request(create.CreateTopicsRequest(
            topics=(create.CreatableTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1,
                                          assignments=(), configs=()),),
            timeout=timedelta(seconds=10), validate_only=False))
        assert response.topics[0].error_code == ErrorCode.none
        produce = conn.module("produce", 9)
        for index in range(batches):
            partitions = tuple(
                produce.PartitionProduceData(
                    index=p, records=records.build_batch([(None, _value(p, index), [], 1_700_000_000_000)]))
                for p in range(PARTITIONS))
            response = conn.request(produce.ProduceRequest(
                transactional_id=None, acks=-1, timeout=timedelta(seconds=10),
                topic_data=(produce.TopicProduceData(name=topic, partition_data=partitions),)))
            for p in response.responses[0].partition_responses:
                assert p.error_code == ErrorCode.none


def _fetch_request(topic: str, module, partitions) -> object:
    return module.FetchRequest(
        replica_id=-1, max_wait=timedelta(0), min_bytes=1, max_bytes=64 << 20, isolation_level=0,
        session_id=0, session_epoch=-1,
        topics=(module.FetchTopic(topic=topic, partitions=tuple(
            module.FetchPartition(partition=p, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1,
                                  log_start_offset=-1, partition_max_bytes=16 << 20)
            for p in partitions)),),
        forgotten_topics_data=(), rack_id="")


def _slow_socket(bootstrap: str) -> socket.socket:
    host, _, port = bootstrap.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)  # before connect: sets the window
    sock.settimeout(30)
    sock.connect((host, int(port)))
    return sock


def _read_frame_slowly(sock: socket.socket, chunk: int = 16384) -> bytes:
    def exactly(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            got = sock.recv(min(chunk, n - len(out)))
            if not got:
                raise ConnectionError("closed mid-frame")
            out += got
            time.sleep(0.0002)  # slower than the broker: its socket fills again
        return bytes(out)

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


def _values(data: bytes) -> list[bytes]:
    out = []
    for header in records.iter_headers(data):
        batch = data[header.position: header.position + header.size_bytes]
        assert isinstance(records.validate_batch(batch, 0, len(batch)), records.BatchHeader)
        out += [r.value for r in records.iter_records(batch)]
    return out


def test_a_slow_reader_gets_every_byte_in_order_by_sendfile_alone(broker):
    topic = f"sendfile-{uuid.uuid4().hex[:8]}"
    _fill(broker.bootstrap, topic)
    fetch = RawConnection.module("fetch", 12)
    metadata = RawConnection.module("metadata", 12)
    sock = _slow_socket(broker.bootstrap)
    try:
        # Three pipelined requests: the whole topic, a Metadata, partition 1 again.
        sock.sendall(encode_request(_fetch_request(topic, fetch, range(PARTITIONS)), 1, "slow")
                     + encode_request(metadata.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                               include_topic_authorized_operations=False), 2, "slow")
                     + encode_request(_fetch_request(topic, fetch, [1]), 3, "slow"))
        correlation, whole = decode_response(1, 12, _read_frame_slowly(sock))
        assert correlation == 1
        for p in whole.responses[0].partitions:
            assert p.error_code == ErrorCode.none
            assert _values(bytes(p.records)) == [_value(p.partition_index, i) for i in range(BATCHES_PER_PARTITION)]
        correlation, meta = decode_response(3, 12, _read_frame_slowly(sock))
        assert correlation == 2 and any(t.name == topic for t in meta.topics)
        correlation, again = decode_response(1, 12, _read_frame_slowly(sock))
        assert correlation == 3
        [p1] = again.responses[0].partitions
        assert _values(bytes(p1.records)) == [_value(1, i) for i in range(BATCHES_PER_PARTITION)]
    finally:
        sock.close()
    counted = broker.counting_os
    assert counted.pread_calls == 0, "a region was copied instead of sent from the file"
    regions = PARTITIONS + 1
    assert counted.sendfile_calls > 2 * regions, "the socket never filled: the test did not wait"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_client_that_hangs_up_mid_region_leaves_nothing_open(broker):
    topic = f"sendfile-{uuid.uuid4().hex[:8]}"
    # More than a loopback socket's largest send buffer (tcp_wmem, 4 MiB by default), so the
    # broker is still waiting to send when the client goes.
    _fill(broker.bootstrap, topic, batches=QUITTER_BATCHES_PER_PARTITION)
    fetch = RawConnection.module("fetch", 12)
    with RawConnection(broker.bootstrap) as warm:  # first use opens the segment files
        warm.request(_fetch_request(topic, fetch, range(PARTITIONS)))
    time.sleep(0.2)
    counted = broker.counting_os
    dups_before, before = counted.dup_calls, _open_fds()
    for _ in range(5):
        sock = _slow_socket(broker.bootstrap)
        sock.sendall(encode_request(_fetch_request(topic, fetch, range(PARTITIONS)), 1, "quitter"))
        sock.recv(4096)  # the response has started; most of it is still in the file
        time.sleep(0.05)  # the broker fills both socket buffers and waits
        sock.close()
    deadline = time.monotonic() + 5
    while (counted.duplicates or _open_fds() > before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counted.dup_calls - dups_before == 5, "the broker did not wait on every quitter"
    assert not counted.duplicates and _open_fds() <= before
    with RawConnection(broker.bootstrap) as conn:  # and the broker goes on serving
        response = conn.request(_fetch_request(topic, fetch, [0]))
        assert len(_values(bytes(response.responses[0].partitions[0].records))) == QUITTER_BATCHES_PER_PARTITION
