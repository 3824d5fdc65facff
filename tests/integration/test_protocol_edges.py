"""The broker's protocol edges over real sockets: exact bytes in, Kafka's answers (or a closed
connection) out, while other connections on the same broker carry on.

Most tests share one in-process broker (fast); tests that restart, kill or lock a data directory
run `odradek serve` as a subprocess. Requests are kio entities sent with the raw helper
(`odradek.testing.raw`), so every API version and every malformed frame can be expressed.
"""

from __future__ import annotations

import struct
import time
import uuid
from datetime import timedelta

import pytest

from odradek.broker.embedded import Broker
from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection

NONE = ErrorCode.none


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    """One in-process broker for the module (auto topic creation on, 1 partition per topic)."""
    b = Broker().start_in_thread()
    yield b
    b.stop_thread()


@pytest.fixture
def conn(broker):
    with RawConnection(broker.bootstrap) as c:
        yield c


@pytest.fixture
def topic():
    return f"edge-{uuid.uuid4().hex[:10]}"


def batch(values, *, timestamp_ms=1_700_000_000_000, **kwargs) -> bytes:
    """One RecordBatch v2 of (key None, value) records."""
    if isinstance(values, (bytes, bytearray)):
        values = [values]
    return records.build_batch(
        [(None, v, [], timestamp_ms + i) for i, v in enumerate(values)], **kwargs
    )


def create_topic(conn, name, partitions=1, **configs):
    m = conn.module("create_topics", 7)
    topic = m.CreatableTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=1,
        assignments=(),
        configs=tuple(
            m.CreatableTopicConfig(name=k.replace("_", "."), value=str(v))
            for k, v in configs.items()
        ),
    )
    response = conn.request(m.CreateTopicsRequest(topics=(topic,), timeout=timedelta(seconds=10)))
    result = response.topics[0]
    assert result.error_code == NONE, (result.error_code, result.error_message)
    return result.topic_id


def produce(conn, topic, data, *, partition=0, acks=-1, version=9, topic_id=None):
    """Send one Produce request for one partition; returns that partition's response."""
    m = conn.module("produce", version)
    if version >= 13:
        topic_data = m.TopicProduceData(
            topic_id=topic_id,
            partition_data=(m.PartitionProduceData(index=partition, records=data),),
        )
    else:
        topic_data = m.TopicProduceData(
            name=topic, partition_data=(m.PartitionProduceData(index=partition, records=data),)
        )
    response = conn.request(
        m.ProduceRequest(acks=acks, timeout=timedelta(seconds=5), topic_data=(topic_data,))
    )
    return response.responses[0].partition_responses[0]


def fetch_request(
    conn,
    partitions,
    *,
    version=12,
    max_wait_ms=0,
    min_bytes=1,
    max_bytes=2**31 - 1,
    session_id=0,
    session_epoch=-1,
    forgotten=(),
):
    """A Fetch request; `partitions` is [(topic name or id, partition, fetch_offset, max_bytes[, epoch])]."""
    m = conn.module("fetch", version)
    by_topic: dict = {}
    for topic, index, offset, partition_max_bytes, *epoch in partitions:
        by_topic.setdefault(topic, []).append(
            m.FetchPartition(
                partition=index,
                fetch_offset=offset,
                partition_max_bytes=partition_max_bytes,
                current_leader_epoch=epoch[0] if epoch else -1,
            )
        )
    key = "topic_id" if version >= 13 else "topic"
    topics = tuple(m.FetchTopic(**{key: t, "partitions": tuple(ps)}) for t, ps in by_topic.items())
    forgotten_topics = tuple(
        m.ForgottenTopic(**{key: t, "partitions": tuple(ps)}) for t, ps in forgotten
    )
    return m.FetchRequest(
        max_wait=timedelta(milliseconds=max_wait_ms),
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        session_id=session_id,
        session_epoch=session_epoch,
        topics=topics,
        forgotten_topics_data=forgotten_topics,
        rack_id="",
    )


def fetch(conn, topic, offset=0, *, partition=0, partition_max_bytes=1 << 20, **kwargs):
    """Fetch one partition; returns its PartitionData."""
    response = conn.request(
        fetch_request(conn, [(topic, partition, offset, partition_max_bytes)], **kwargs)
    )
    assert response.error_code == NONE
    return response.responses[0].partitions[0]


def batches_in(data) -> list:
    """The whole batch headers in fetched record bytes (a trailing partial batch is skipped)."""
    return list(records.iter_headers(bytes(data or b"")))


def values_in(data) -> list[bytes]:
    return [
        r.value
        for h in batches_in(data)
        for r in records.iter_records(bytes(data)[h.position : h.position + h.size_bytes])
    ]


def assert_serves(conn, topic):
    """`conn` still produces and fetches on `topic`."""
    response = produce(conn, topic, batch(b"still here"))
    assert response.error_code == NONE
    fetched = fetch(conn, topic, response.base_offset)
    assert b"still here" in values_in(fetched.records)


def header_v1(api_key, api_version, correlation_id=7, client_id=b"raw"):
    return struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id


def api_versions_request(conn, version, name="odradek-tests", software_version="1.0"):
    m = conn.module("api_versions", version)
    if version >= 3:
        return m.ApiVersionsRequest(
            client_software_name=name, client_software_version=software_version
        )
    return m.ApiVersionsRequest()


# -- ApiVersions -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_answers_every_version_with_the_api_table(conn, version):
    response = conn.request(api_versions_request(conn, version))
    assert response.error_code == NONE
    ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert ranges[18] == (0, 4)
    assert ranges[0][1] >= 9 and ranges[1][1] >= 12 and ranges[3][1] >= 12


def test_api_versions_records_a_valid_client_software_name(broker, conn):
    response = conn.request(api_versions_request(conn, 3, "my-client", "2.1.0-rc1"))
    assert response.error_code == NONE
    clients = [c.client for c in broker.core.connections._last_active_ms]
    assert any((c.software_name, c.software_version) == ("my-client", "2.1.0-rc1") for c in clients)


@pytest.mark.parametrize(
    "name, software_version",
    [("", "1.0"), ("bad name", "1.0"), ("ok", "-1.0"), ("ok", "1.0!"), ("-lead", "1")],
)
def test_api_versions_with_invalid_client_software_is_invalid_request(conn, name, software_version):
    response = conn.request(api_versions_request(conn, 3, name, software_version))
    assert response.error_code == ErrorCode.invalid_request
    # The connection stays usable: Kafka answers and lets the client retry.
    assert conn.request(api_versions_request(conn, 3)).error_code == NONE


def test_api_versions_of_unknown_version_is_answered_in_v0_with_unsupported_version(conn):
    conn.send_frame(header_v1(18, 99, correlation_id=42) + b"\x00garbage")
    correlation_id, response = conn.receive(18, 0)
    assert correlation_id == 42
    assert response.error_code == ErrorCode.unsupported_version
    assert {k.api_key for k in response.api_keys} >= {0, 1, 3, 18}
    # And the client may then negotiate down on the same connection.
    assert conn.request(api_versions_request(conn, 3)).error_code == NONE


def test_api_versions_v3_response_carries_no_default_valued_tagged_fields(conn):
    correlation_id = conn.send(api_versions_request(conn, 3))
    frame = conn.receive_frame()
    # Response header v0 for ApiVersions: just the correlation id, no tagged-field byte.
    assert struct.unpack_from(">i", frame)[0] == correlation_id
    # The body's final byte is its top-level tagged-field count: 0 (no supported_features,
    # finalized_features_epoch -1, finalized_features or zk_migration_ready emitted).
    assert frame[-1] == 0
    # Every ApiVersion entry ends with an empty tagged section too: 2+2+2 bytes + 1 tag byte.
    (error_code,) = struct.unpack_from(">h", frame, 4)
    count = frame[6] - 1  # compact array length is n + 1 (fits one byte for our table)
    entries = frame[7 : 7 + count * 7]
    assert error_code == 0
    assert all(entries[i * 7 + 6] == 0 for i in range(count))
    assert len(frame) == 4 + 2 + 1 + count * 7 + 4 + 1  # + throttle_time_ms + tag count


# -- connections closed for bad input, others unaffected ------------------------------------


def _bad_inputs():
    max_bytes = 100 * 1024 * 1024  # socket.request.max.bytes default
    metadata_v12 = header_v1(3, 12)[:-3] + b"\x00\x03raw\x00" + b"\x01\x01\x00"
    return {
        "unknown api key": struct.pack(">i", 12) + header_v1(9999, 0)[:-3] + b"\x00\x00",
        "unsupported version of another api": struct.pack(">i", 10)
        + header_v1(3, 99)[:-3]
        + b"\x00\x00",
        "version advertised but not served": struct.pack(">i", 10)
        + header_v1(0, 2)[:-3]
        + b"\x00\x00",
        "truncated body": struct.pack(">i", len(metadata_v12) - 2) + metadata_v12[:-2],
        "garbage bytes": struct.pack(">i", 20) + b"\x00\x00\x00\x09" + bytes(range(200, 216)),
        "short frame": struct.pack(">i", 3) + b"\x00\x00\x00",
        "negative frame size": struct.pack(">i", -5) + b"\x00" * 8,
        "frame over socket.request.max.bytes": struct.pack(">i", max_bytes + 1) + b"\x00" * 16,
    }


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_bad_input_closes_that_connection_only(broker, topic, name):
    with RawConnection(broker.bootstrap) as healthy, RawConnection(broker.bootstrap) as bad:
        create_topic(healthy, topic)
        assert_serves(healthy, topic)
        bad.send_bytes(_bad_inputs()[name])
        assert bad.wait_closed(5), f"{name}: connection not closed"
        assert_serves(healthy, topic)


def _huge_count_frames() -> dict[str, bytes]:
    uvarint_2_31 = b"\xff\xff\xff\xff\x07"  # compact count 2^31 - 2
    uvarint_2_32 = b"\xff\xff\xff\xff\x0f"  # 2^32 - 1: the largest 32-bit varint
    uvarint_2_33 = b"\xff\xff\xff\xff\x20"  # beyond 32 bits (kio reads up to 35)
    produce_v8 = header_v1(0, 8)  # classic: int32 counts
    produce_v9 = header_v1(0, 9) + b"\x00"  # flexible: header v2
    fetch_v12 = header_v1(1, 12) + b"\x00" + struct.pack(">iiiibii", -1, 0, 1, 1 << 20, 0, 0, -1)
    return {
        "classic topic count 2^31-1": produce_v8 + struct.pack(">hhii", -1, -1, 1000, 2**31 - 1),
        "classic nested count 2^31-1": produce_v8
        + struct.pack(">hhiih", -1, -1, 1000, 1, 1)
        + b"t"
        + struct.pack(">i", 2**31 - 1),
        "compact count 2^31": produce_v9 + b"\x00" + struct.pack(">hi", -1, 1000) + uvarint_2_31,
        "compact count 2^32": produce_v9 + b"\x00" + struct.pack(">hi", -1, 1000) + uvarint_2_32,
        "compact count 2^33": produce_v9 + b"\x00" + struct.pack(">hi", -1, 1000) + uvarint_2_33,
        "compact nested count 2^33": produce_v9
        + b"\x00"
        + struct.pack(">hi", -1, 1000)
        + b"\x02\x02t"
        + uvarint_2_33,
        "compact string length 2^33": produce_v9
        + b"\x00"
        + struct.pack(">hi", -1, 1000)
        + b"\x02"
        + uvarint_2_33,
        "fetch topics count 2^32": fetch_v12 + uvarint_2_32,
        "metadata topics count 2^33": header_v1(3, 12) + b"\x00" + uvarint_2_33 + b"\x01\x00\x00",
    }


@pytest.fixture(scope="module")
def broker_process(tmp_path_factory):
    """A broker subprocess: a crash shows up as a failed test, not a dead test run."""
    with BrokerProcess(str(tmp_path_factory.mktemp("edges"))) as process:
        yield process


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("name", list(_huge_count_frames()))
def test_huge_count_in_a_small_frame_is_refused_without_allocating(broker_process, topic, name):
    with RawConnection(broker_process.bootstrap) as healthy:
        create_topic(healthy, topic)
        with RawConnection(broker_process.bootstrap) as bad:
            started = time.monotonic()
            bad.send_frame(_huge_count_frames()[name])
            assert bad.wait_closed(5), "connection not closed"
            assert time.monotonic() - started < 2.0
        assert broker_process.process.poll() is None, "".join(broker_process.output[-20:])
        assert_serves(healthy, topic)
    assert (
        _peak_rss_kib(broker_process.process.pid) < 300 * 1024
    )  # far below any 2^31-element array


# -- ordering and isolation between connections ---------------------------------------------


def test_pipelined_requests_are_answered_in_order(conn, topic):
    create_topic(conn, topic)
    sent = []
    for i in range(60):
        if i % 3 == 0:
            request = api_versions_request(conn, 3)
        elif i % 3 == 1:
            request = conn.module("metadata", 12).MetadataRequest(
                topics=None, include_topic_authorized_operations=False
            )
        else:
            m = conn.module("produce", 9)
            request = m.ProduceRequest(
                acks=1,
                timeout=timedelta(seconds=5),
                topic_data=(
                    m.TopicProduceData(
                        name=topic,
                        partition_data=(m.PartitionProduceData(index=0, records=batch(b"%d" % i)),),
                    ),
                ),
            )
        sent.append((conn.send(request), request))
    produced_offsets = []
    for correlation_id, request in sent:
        got, response = conn.receive(request.__api_key__, request.__version__)
        assert got == correlation_id
        if request.__api_key__ == 0:
            produced_offsets.append(response.responses[0].partition_responses[0].base_offset)
    assert produced_offsets == list(range(20))


def test_a_long_poll_holds_back_only_its_own_connection(broker, conn, topic):
    create_topic(conn, topic)
    started = time.monotonic()
    conn.send(fetch_request(conn, [(topic, 0, 0, 1 << 20)], max_wait_ms=1500))
    metadata_id = conn.send(api_versions_request(conn, 3))
    with RawConnection(broker.bootstrap) as other:
        assert other.request(api_versions_request(other, 3)).error_code == NONE
        assert time.monotonic() - started < 1.0  # not held back by the other connection's poll
    first, _ = conn.receive(1, 12)
    second, _ = conn.receive(18, 3)
    assert time.monotonic() - started >= 1.4  # this connection answers in order, after the poll
    assert second == metadata_id and first == metadata_id - 1


# -- Produce -------------------------------------------------------------------------------------


def test_produce_batch_with_bad_crc_is_corrupt_message(conn, topic):
    create_topic(conn, topic)
    data = bytearray(batch(b"payload"))
    data[-1] ^= 0xFF
    assert produce(conn, topic, bytes(data)).error_code == ErrorCode.corrupt_message
    assert fetch(conn, topic).high_watermark == 0


def test_produce_magic_1_is_unsupported_for_message_format(conn, topic):
    create_topic(conn, topic)
    data = bytearray(batch(b"payload"))
    data[records.MAGIC_OFFSET] = 1
    assert produce(conn, topic, bytes(data)).error_code == ErrorCode.unsupported_for_message_format


def test_produce_two_batches_for_one_partition_is_invalid_record(conn, topic):
    create_topic(conn, topic)
    assert produce(conn, topic, batch(b"a") + batch(b"b")).error_code == ErrorCode.invalid_record
    assert fetch(conn, topic).high_watermark == 0


def with_attributes(data: bytes, set_bits: int) -> bytes:
    """`data` (one batch) with attribute bits set and its CRC made valid again."""
    raw = bytearray(data)
    attributes = struct.unpack_from(">h", raw, records.ATTRIBUTES_OFFSET)[0] | set_bits
    struct.pack_into(">h", raw, records.ATTRIBUTES_OFFSET, attributes)
    struct.pack_into(">I", raw, records.CRC_OFFSET, records.compute_crc(raw, 0, len(raw)))
    return bytes(raw)


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_produce_unknown_compression_codec_is_refused_and_not_stored(conn, topic, codec):
    # Kafka's CompressionType.forId refuses ids above 4; a stored batch no client can decode
    # would stop every consumer of the partition at it.
    create_topic(conn, topic)
    response = produce(conn, topic, with_attributes(batch(b"x"), codec))
    assert response.error_code == ErrorCode.invalid_record
    assert fetch(conn, topic).high_watermark == 0


def test_produce_zstd_before_v7_is_unsupported_compression_type(conn, topic):
    from odradek.protocol.compression import Compression

    create_topic(conn, topic)
    zstd = batch(b"z" * 100, compression=Compression.ZSTD)
    assert (
        produce(conn, topic, zstd, version=6).error_code == ErrorCode.unsupported_compression_type
    )
    assert produce(conn, topic, zstd, version=7).error_code == NONE


def test_produce_over_max_message_bytes_is_message_too_large(conn, topic):
    create_topic(conn, topic, max_message_bytes=1000)
    assert produce(conn, topic, batch(b"x" * 2000)).error_code == ErrorCode.message_too_large
    assert produce(conn, topic, batch(b"x" * 500)).error_code == NONE


def test_max_message_bytes_bounds_the_whole_batch_as_in_kafka(conn, topic):
    # Kafka compares the batch's size in bytes, its 12-byte log overhead included, with
    # max.message.bytes (whose default 1048588 is 1 MiB plus that overhead).
    overhead = len(batch(b"x" * 900)) - 900  # header and record framing around the value
    create_topic(conn, topic, max_message_bytes=1000)
    exact = produce(conn, topic, batch(b"x" * (1000 - overhead)))
    assert exact.error_code == NONE
    one_over = produce(conn, topic, batch(b"x" * (1000 - overhead + 1)))
    assert one_over.error_code == ErrorCode.message_too_large


def test_produce_acks_0_gets_no_response_but_is_stored(conn, topic):
    create_topic(conn, topic)
    m = conn.module("produce", 9)
    request = m.ProduceRequest(
        acks=0,
        timeout=timedelta(seconds=5),
        topic_data=(
            m.TopicProduceData(
                name=topic,
                partition_data=(m.PartitionProduceData(index=0, records=batch(b"fire")),),
            ),
        ),
    )
    conn.send(request)
    # The next frame on the connection answers the next request: nothing was sent for acks=0.
    fetched = fetch(conn, topic, max_wait_ms=2000)
    assert values_in(fetched.records) == [b"fire"]


def test_produce_acks_0_with_an_error_closes_the_connection(broker, conn, topic):
    # The client gets no response to learn the error from, so Kafka closes the connection;
    # the producer then refreshes its metadata and reconnects.
    m = conn.module("produce", 9)
    conn.send(
        m.ProduceRequest(
            acks=0,
            timeout=timedelta(seconds=5),
            topic_data=(
                m.TopicProduceData(
                    name=topic,
                    partition_data=(m.PartitionProduceData(index=0, records=batch(b"lost")),),
                ),
            ),
        )
    )
    assert conn.wait_closed(5)
    with RawConnection(broker.bootstrap) as other:
        create_topic(other, topic)
        assert_serves(other, topic)


def test_produce_acks_2_is_invalid_required_acks(conn, topic):
    create_topic(conn, topic)
    assert produce(conn, topic, batch(b"a"), acks=2).error_code == ErrorCode.invalid_required_acks


def test_produce_to_unknown_topic_is_unknown_topic_or_partition(conn, topic):
    assert produce(conn, topic, batch(b"a")).error_code == ErrorCode.unknown_topic_or_partition
    create_topic(conn, topic)
    assert (
        produce(conn, topic, batch(b"a"), partition=5).error_code
        == ErrorCode.unknown_topic_or_partition
    )


def test_produce_to_an_internal_topic_is_invalid_topic_exception():
    # Only the broker writes __consumer_offsets; a client append would corrupt group state.
    with Broker() as b, RawConnection(b.bootstrap) as c:
        [described] = metadata(c, ["__consumer_offsets"]).topics
        assert described.error_code == NONE
        response = produce(c, "__consumer_offsets", batch(b"forged commit"))
        assert response.error_code == ErrorCode.invalid_topic_exception
        assert fetch(c, "__consumer_offsets").high_watermark == 0
        # Kafka lets its own admin tooling (client id "__admin_client") write there (with keys:
        # the topic is compacted).
        with RawConnection(b.bootstrap, client_id="__admin_client") as admin:
            keyed = records.build_batch([(b"tooling-key", b"tooling", [], 1_700_000_000_000)])
            assert produce(admin, "__consumer_offsets", keyed).error_code == NONE


def test_produce_v13_by_topic_id_and_unknown_topic_id(conn, topic):
    topic_id = create_topic(conn, topic)
    response = produce(conn, None, batch(b"by id"), version=13, topic_id=topic_id)
    assert (response.error_code, response.base_offset) == (NONE, 0)
    assert values_in(fetch(conn, topic).records) == [b"by id"]
    unknown = produce(conn, None, batch(b"a"), version=13, topic_id=uuid.uuid4())
    assert unknown.error_code == ErrorCode.unknown_topic_id


def test_log_append_time_topic_returns_broker_time_and_consumers_see_it(broker, conn, topic):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    create_topic(conn, topic, message_timestamp_type="LogAppendTime")
    before_ms = int(time.time() * 1000)
    response = produce(conn, topic, batch([b"a", b"b"], timestamp_ms=1_000))
    after_ms = int(time.time() * 1000)
    assert response.error_code == NONE
    append_ms = int(response.log_append_time.timestamp() * 1000)
    assert before_ms - 1 <= append_ms <= after_ms + 1

    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "lat", "enable.auto.commit": False}
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        seen = []
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            for msg in consumer.consume(10, 0.5):
                assert msg.error() is None
                seen.append(msg.timestamp())
    finally:
        consumer.close()
    assert seen == [(confluent_kafka.TIMESTAMP_LOG_APPEND_TIME, append_ms)] * 2


# -- Idempotence ---------------------------------------------------------------------------------


def init_producer_id(conn):
    m = conn.module("init_producer_id", 4)
    response = conn.request(
        m.InitProducerIdRequest(transactional_id=None, transaction_timeout=timedelta(seconds=60))
    )
    assert response.error_code == NONE
    return response.producer_id, response.producer_epoch


def idempotent_batch(producer_id, epoch, sequence, values):
    return batch(values, producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence)


def test_init_producer_id_gives_distinct_ids(conn):
    ids = [init_producer_id(conn) for _ in range(5)]
    assert len({pid for pid, _ in ids}) == 5
    assert all(epoch == 0 for _, epoch in ids)


def test_duplicate_idempotent_batch_gets_original_offset_and_is_stored_once(conn, topic):
    create_topic(conn, topic)
    pid, epoch = init_producer_id(conn)
    first = idempotent_batch(pid, epoch, 0, [b"a", b"b"])
    assert produce(conn, topic, first).base_offset == 0
    second = produce(conn, topic, idempotent_batch(pid, epoch, 2, [b"c"]))
    assert second.base_offset == 2
    duplicate = produce(conn, topic, first)
    assert (duplicate.error_code, duplicate.base_offset) == (NONE, 0)
    fetched = fetch(conn, topic)
    assert fetched.high_watermark == 3
    assert values_in(fetched.records) == [b"a", b"b", b"c"]


def test_sequence_gap_is_out_of_order_sequence_number(conn, topic):
    create_topic(conn, topic)
    pid, epoch = init_producer_id(conn)
    assert produce(conn, topic, idempotent_batch(pid, epoch, 0, [b"a"])).error_code == NONE
    gap = produce(conn, topic, idempotent_batch(pid, epoch, 5, [b"b"]))
    assert gap.error_code == ErrorCode.out_of_order_sequence_number


def test_older_producer_epoch_is_invalid_producer_epoch(conn, topic):
    create_topic(conn, topic)
    pid, _ = init_producer_id(conn)
    # A client bumps its epoch (KIP-360) and starts again at sequence 0.
    assert produce(conn, topic, idempotent_batch(pid, 1, 0, [b"a"])).error_code == NONE
    stale = produce(conn, topic, idempotent_batch(pid, 0, 1, [b"b"]))
    assert stale.error_code == ErrorCode.invalid_producer_epoch


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_producer_ids_and_state_survive_a_restart(tmp_path, topic, how):
    with BrokerProcess(str(tmp_path / "data")) as process:
        with RawConnection(process.bootstrap) as c:
            create_topic(c, topic)
            ids_before = {init_producer_id(c)[0] for _ in range(3)}
            pid, epoch = init_producer_id(c)
            produce(c, topic, idempotent_batch(pid, epoch, 0, [b"a"]))
            last = idempotent_batch(pid, epoch, 1, [b"b", b"c"])
            assert produce(c, topic, last).base_offset == 1
        if how == "kill -9":
            process.kill()
        else:
            assert process.stop() == 0
        process.start()
        with RawConnection(process.bootstrap) as c:
            ids_after = {init_producer_id(c)[0] for _ in range(3)}
            assert not ids_after & (ids_before | {pid})
            assert min(ids_after) > max(ids_before | {pid})
            duplicate = produce(c, topic, last)
            assert (duplicate.error_code, duplicate.base_offset) == (NONE, 1)
            gap = produce(c, topic, idempotent_batch(pid, epoch, 9, [b"d"]))
            assert gap.error_code == ErrorCode.out_of_order_sequence_number
            fetched = fetch(c, topic)
            assert values_in(fetched.records) == [b"a", b"b", b"c"]


# -- Fetch ---------------------------------------------------------------------------------------


def test_fetch_long_poll_waits_up_to_max_wait_when_no_data(conn, topic):
    create_topic(conn, topic)
    started = time.monotonic()
    fetched = fetch(conn, topic, 0, max_wait_ms=300)
    waited_s = time.monotonic() - started
    assert fetched.error_code == NONE and batches_in(fetched.records) == []
    assert 0.29 <= waited_s < 1.5


def test_fetch_long_poll_returns_as_soon_as_data_arrives(broker, conn, topic):
    import threading

    create_topic(conn, topic)
    produced_at: list[float] = []

    def produce_later():
        time.sleep(0.3)
        with RawConnection(broker.bootstrap) as other:
            produced_at.append(time.monotonic())
            produce(other, topic, batch(b"wake up"))

    thread = threading.Thread(target=produce_later)
    thread.start()
    fetched = fetch(conn, topic, 0, max_wait_ms=5000)
    returned_at = time.monotonic()
    thread.join()
    assert values_in(fetched.records) == [b"wake up"]
    assert returned_at - produced_at[0] < 0.1


def test_fetch_min_bytes_waits_for_enough_data_then_answers_with_what_there_is(conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch(b"small"))
    started = time.monotonic()
    fetched = fetch(conn, topic, 0, max_wait_ms=300, min_bytes=100_000)
    assert time.monotonic() - started >= 0.29
    assert values_in(fetched.records) == [b"small"]
    started = time.monotonic()
    fetched = fetch(conn, topic, 0, max_wait_ms=3000, min_bytes=10)
    assert time.monotonic() - started < 1.0
    assert values_in(fetched.records) == [b"small"]


def test_fetch_partition_max_bytes_bounds_the_response_but_the_first_batch_is_always_whole(
    conn, topic
):
    create_topic(conn, topic)
    for i in range(3):
        produce(conn, topic, batch(bytes([65 + i]) * 1000))
    size = len(batch(b"x" * 1000))
    # A limit smaller than the first batch still returns that batch whole (KIP-74).
    tiny = fetch(conn, topic, 0, partition_max_bytes=10)
    assert len(tiny.records) == size and values_in(tiny.records) == [b"A" * 1000]
    # A limit between one and two batches: one whole batch, never more bytes than the limit.
    limited = fetch(conn, topic, 0, partition_max_bytes=size + size // 2)
    assert len(limited.records) <= size + size // 2
    assert values_in(limited.records) == [b"A" * 1000]
    everything = fetch(conn, topic, 0, partition_max_bytes=1 << 20)
    assert len(values_in(everything.records)) == 3


def test_fetch_max_bytes_bounds_the_whole_response_first_partition_gets_one_batch(conn, topic):
    create_topic(conn, topic, partitions=2)
    for p in (0, 1):
        produce(conn, topic, batch(b"v" * 500), partition=p)
        produce(conn, topic, batch(b"w" * 500), partition=p)
    size = len(batch(b"v" * 500))
    response = conn.request(
        fetch_request(conn, [(topic, 0, 0, 1 << 20), (topic, 1, 0, 1 << 20)], max_bytes=10)
    )
    first, second = response.responses[0].partitions
    assert len(first.records) == size
    assert batches_in(second.records) == []
    response = conn.request(
        fetch_request(conn, [(topic, 0, 0, 1 << 20), (topic, 1, 0, 1 << 20)], max_bytes=3 * size)
    )
    first, second = response.responses[0].partitions
    assert len(values_in(first.records)) == 2 and len(values_in(second.records)) == 1


def test_the_brokers_fetch_max_bytes_caps_a_response_that_asks_for_more(topic):
    """Kafka bounds every Fetch by min(request max_bytes, the broker's fetch.max.bytes)."""
    b = Broker(fetch_max_bytes=4096).start_in_thread()
    try:
        with RawConnection(b.bootstrap) as conn:
            create_topic(conn, topic, partitions=2)
            for p in (0, 1):
                for _ in range(4):
                    produce(conn, topic, batch(b"v" * 1000), partition=p)
            size = len(batch(b"v" * 1000))
            wanted = [(topic, 0, 0, 1 << 20), (topic, 1, 0, 1 << 20)]
            response = conn.request(fetch_request(conn, wanted, max_bytes=1 << 30))
            first, second = response.responses[0].partitions
            sent = len(first.records or b"") + len(second.records or b"")
            assert 0 < sent <= 4096
            assert len(values_in(first.records)) == 4096 // size
            assert values_in(second.records) == []
            # Below the cap, the request's own limit still rules; the first batch is always whole.
            response = conn.request(fetch_request(conn, wanted, max_bytes=10))
            first, second = response.responses[0].partitions
            assert len(first.records) == size and values_in(second.records) == []
    finally:
        b.stop_thread()


def test_timestamps_outside_the_topics_bounds_get_invalid_timestamp(conn, topic):
    now_ms = int(time.time() * 1000)
    create_topic(conn, topic, message_timestamp_before_max_ms=3_600_000)
    hour = 3_600_000
    for stamp, error in ((now_ms, NONE), (now_ms - hour // 2, NONE), (now_ms + hour // 2, NONE),
                         (now_ms - 2 * hour, ErrorCode.invalid_timestamp),  # before.max: 1 hour here
                         (now_ms + 2 * hour, ErrorCode.invalid_timestamp)):  # after.max: 1 hour default
        response = produce(conn, topic, batch(b"v", timestamp_ms=stamp))
        assert response.error_code == error, (stamp - now_ms, response.error_message)
        if error != NONE:
            assert "out of range" in response.error_message
    # A batch whose last record is the one too far ahead: the header's max timestamp catches it.
    response = produce(conn, topic, records.build_batch(
        [(None, b"a", [], now_ms), (None, b"b", [], now_ms + 2 * hour)]))
    assert response.error_code == ErrorCode.invalid_timestamp
    assert values_in(fetch(conn, topic).records) == [b"v"] * 3


def test_log_append_time_topics_take_any_timestamp_and_producers_may_not_claim_it(conn, topic):
    far = int(time.time() * 1000) + 10 * 3_600_000
    create_topic(conn, topic, message_timestamp_type="LogAppendTime")
    assert produce(conn, topic, batch(b"later", timestamp_ms=far)).error_code == NONE
    other = f"{topic}-create-time"
    create_topic(conn, other)
    response = produce(conn, other, batch(b"claims", timestamp_ms=far - 10 * 3_600_000, log_append_time=True))
    assert response.error_code == ErrorCode.invalid_timestamp
    assert "LogAppendTime" in response.error_message


def test_a_compacted_topic_refuses_records_without_a_key(conn, topic):
    create_topic(conn, topic, cleanup_policy="compact")
    keyed = records.build_batch([(b"k1", b"v1", [], 1_700_000_000_000), (b"k2", None, [], 1_700_000_000_001)])
    assert produce(conn, topic, keyed).error_code == NONE  # a tombstone has a key
    for codec in (records.Compression.NONE, records.Compression.LZ4):
        half_keyed = records.build_batch(
            [(b"k3", b"v3", [], 1_700_000_000_002), (None, b"v4", [], 1_700_000_000_003)], compression=codec)
        response = produce(conn, topic, half_keyed)
        assert response.error_code == ErrorCode.invalid_record
        assert "without key" in response.error_message and "record 1" in response.error_message
    assert [r.key for h in batches_in(fetch(conn, topic).records)
            for r in records.iter_records(bytes(fetch(conn, topic).records)[h.position:h.position + h.size_bytes])
            ] == [b"k1", b"k2"]
    other = f"{topic}-delete"
    create_topic(conn, other)  # cleanup.policy=delete: keys are optional
    assert produce(conn, other, batch(b"no key")).error_code == NONE


def test_fetch_inside_a_batch_returns_the_whole_batch(conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch([b"r0", b"r1", b"r2"]))
    fetched = fetch(conn, topic, 1)
    [header] = batches_in(fetched.records)
    assert (header.base_offset, header.last_offset) == (0, 2)


def test_fetch_beyond_log_end_offset_is_offset_out_of_range(conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch([b"a", b"b"]))
    assert fetch(conn, topic, 2).error_code == NONE  # at the LEO: nothing yet, fine
    assert fetch(conn, topic, 3).error_code == ErrorCode.offset_out_of_range
    assert fetch(conn, topic, -1).error_code == ErrorCode.offset_out_of_range


def test_fetch_unknown_topic_is_unknown_topic_or_partition(conn, topic):
    assert fetch(conn, topic).error_code == ErrorCode.unknown_topic_or_partition


def test_fetch_v13_by_topic_id_and_unknown_topic_id(conn, topic):
    topic_id = create_topic(conn, topic)
    produce(conn, topic, batch(b"by id"))
    response = conn.request(fetch_request(conn, [(topic_id, 0, 0, 1 << 20)], version=13))
    assert response.responses[0].topic_id == topic_id
    assert values_in(response.responses[0].partitions[0].records) == [b"by id"]
    unknown = conn.request(fetch_request(conn, [(uuid.uuid4(), 0, 0, 1 << 20)], version=13))
    assert unknown.responses[0].partitions[0].error_code == ErrorCode.unknown_topic_id


def test_fetch_current_leader_epoch_is_checked(broker, conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch(b"a"))
    assert fetch_epoch(conn, topic, 0).error_code == NONE
    assert fetch_epoch(conn, topic, 1).error_code == ErrorCode.unknown_leader_epoch
    # Simulate a leader change on the broker (a single node never changes leader on its own).
    broker.core.replica_manager.get(topic, 0).leader_epoch = 2
    try:
        assert fetch_epoch(conn, topic, 1).error_code == ErrorCode.fenced_leader_epoch
        assert fetch_epoch(conn, topic, 3).error_code == ErrorCode.unknown_leader_epoch
        assert fetch_epoch(conn, topic, 2).error_code == NONE
    finally:
        broker.core.replica_manager.get(topic, 0).leader_epoch = 0


def fetch_epoch(conn, topic, current_leader_epoch):
    response = conn.request(fetch_request(conn, [(topic, 0, 0, 1 << 20, current_leader_epoch)]))
    return response.responses[0].partitions[0]


# -- Fetch sessions (KIP-227) --------------------------------------------------------------------


def session_fetch(conn, partitions, session_id, epoch, forgotten=(), version=12):
    response = conn.request(
        fetch_request(
            conn,
            partitions,
            version=version,
            session_id=session_id,
            session_epoch=epoch,
            forgotten=forgotten,
        )
    )
    returned = {
        (t.topic_id if version >= 13 else t.topic, p.partition_index): p
        for t in response.responses
        for p in t.partitions
    }
    return response, returned


def test_fetch_session_full_then_incremental_returns_only_changed_partitions(conn, topic):
    create_topic(conn, topic, partitions=3)
    for p in range(3):
        produce(conn, topic, batch(b"first"), partition=p)
    full, returned = session_fetch(conn, [(topic, p, 1, 1 << 20) for p in range(3)], 0, 0)
    assert full.error_code == NONE and full.session_id != 0
    assert set(returned) == {(topic, 0), (topic, 1), (topic, 2)}
    session_id = full.session_id

    # Nothing changed: an incremental fetch lists no partitions at all.
    response, returned = session_fetch(conn, [], session_id, 1)
    assert (response.error_code, response.session_id, returned) == (NONE, session_id, {})

    # New data on partition 1 only: only partition 1 comes back, with its records.
    produce(conn, topic, batch(b"second"), partition=1)
    response, returned = session_fetch(conn, [], session_id, 2)
    assert set(returned) == {(topic, 1)}
    assert values_in(returned[(topic, 1)].records) == [b"second"]
    assert returned[(topic, 1)].high_watermark == 2

    # The fetcher moves partition 1's position; nothing new anywhere else.
    response, returned = session_fetch(conn, [(topic, 1, 2, 1 << 20)], session_id, 3)
    assert returned == {}

    # Forget partition 0: new data there is no longer reported.
    response, returned = session_fetch(conn, [], session_id, 4, forgotten=[(topic, [0])])
    produce(conn, topic, batch(b"third"), partition=0)
    produce(conn, topic, batch(b"third"), partition=2)
    response, returned = session_fetch(conn, [], session_id, 5)
    assert set(returned) == {(topic, 2)}


def test_fetch_session_errors_and_close(conn, topic):
    create_topic(conn, topic)
    full, _ = session_fetch(conn, [(topic, 0, 0, 1 << 20)], 0, 0)
    session_id = full.session_id
    wrong_epoch, _ = session_fetch(conn, [], session_id, 7)
    assert wrong_epoch.error_code == ErrorCode.invalid_fetch_session_epoch
    unknown = session_id % (2**31 - 1) + 1
    not_found, _ = session_fetch(conn, [], unknown, 1)
    assert not_found.error_code == ErrorCode.fetch_session_id_not_found
    # The right epoch still works after a wrong one.
    ok, _ = session_fetch(conn, [], session_id, 1)
    assert ok.error_code == NONE
    # Epoch -1 closes the session (a sessionless full fetch answers session id 0) ...
    closing, returned = session_fetch(conn, [(topic, 0, 0, 1 << 20)], session_id, -1)
    assert (closing.error_code, closing.session_id) == (NONE, 0)
    assert set(returned) == {(topic, 0)}
    # ... after which the id is gone.
    gone, _ = session_fetch(conn, [], session_id, 2)
    assert gone.error_code == ErrorCode.fetch_session_id_not_found


def test_fetch_session_v13_by_topic_id(conn, topic):
    topic_id = create_topic(conn, topic, partitions=2)
    full, returned = session_fetch(
        conn, [(topic_id, p, 0, 1 << 20) for p in range(2)], 0, 0, version=13
    )
    assert set(returned) == {(topic_id, 0), (topic_id, 1)}
    produce(conn, topic, batch(b"x"), partition=1)
    _, returned = session_fetch(conn, [], full.session_id, 1, version=13)
    assert set(returned) == {(topic_id, 1)}
    session_fetch(conn, [], full.session_id, 2, forgotten=[(topic_id, [1])], version=13)
    produce(conn, topic, batch(b"y"), partition=1)
    _, returned = session_fetch(conn, [], full.session_id, 3, version=13)
    assert returned == {}


# -- ListOffsets and OffsetForLeaderEpoch --------------------------------------------------------

T0 = 1_700_000_000_000


def list_offsets(conn, topic, *timestamps, version=8, partition=0):
    m = conn.module("list_offsets", version)
    partitions = tuple(
        m.ListOffsetsPartition(partition_index=partition, timestamp=t) for t in timestamps
    )
    kwargs = {"isolation_level": 0} if version >= 2 else {}
    if version >= 10:
        kwargs["timeout"] = timedelta(seconds=5)
    response = conn.request(
        m.ListOffsetsRequest(
            replica_id=-1, topics=(m.ListOffsetsTopic(name=topic, partitions=partitions),), **kwargs
        )
    )
    return response.topics[0].partitions


def test_list_offsets_earliest_latest_and_by_timestamp_inside_a_batch(conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch([b"a", b"b", b"c"], timestamp_ms=T0))  # offsets 0-2, T0..T0+2
    produce(conn, topic, batch([b"d", b"e"], timestamp_ms=T0 + 100))  # offsets 3-4
    [earliest] = list_offsets(conn, topic, -2)
    [latest] = list_offsets(conn, topic, -1)
    assert (earliest.error_code, earliest.offset) == (NONE, 0)
    assert (latest.error_code, latest.offset) == (NONE, 5)
    [inside] = list_offsets(conn, topic, T0 + 1)
    assert (inside.offset, inside.timestamp) == (1, T0 + 1)
    [between] = list_offsets(conn, topic, T0 + 50)
    assert (between.offset, between.timestamp) == (3, T0 + 100)
    [after_all] = list_offsets(conn, topic, T0 + 10_000)
    assert (after_all.error_code, after_all.offset, after_all.timestamp) == (NONE, -1, -1)
    [v1_latest] = list_offsets(conn, topic, -1, version=1)
    assert v1_latest.offset == 5


def test_list_offsets_max_timestamp_finds_the_record_with_the_largest_timestamp(conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch([b"a", b"b", b"c"], timestamp_ms=T0))  # offsets 0-2, max T0+2
    produce(conn, topic, batch([b"d"], timestamp_ms=T0 - 500))  # offset 3, older
    [found] = list_offsets(conn, topic, -3)
    assert (found.error_code, found.offset, found.timestamp) == (NONE, 2, T0 + 2)


def test_list_offsets_duplicate_partition_is_invalid_request(conn, topic):
    create_topic(conn, topic)
    answers = list_offsets(conn, topic, -1, -2)
    assert [a.error_code for a in answers] == [ErrorCode.invalid_request] * 2


def test_list_offsets_unknown_topic(conn, topic):
    [answer] = list_offsets(conn, topic, -1)
    assert answer.error_code == ErrorCode.unknown_topic_or_partition


def test_offset_for_leader_epoch_answers_epoch_0_and_the_log_end_offset(conn, topic):
    create_topic(conn, topic)
    produce(conn, topic, batch([b"a", b"b"]))
    m = conn.module("offset_for_leader_epoch", 4)
    response = conn.request(
        m.OffsetForLeaderEpochRequest(
            topics=(
                m.OffsetForLeaderTopic(
                    topic=topic,
                    partitions=(
                        m.OffsetForLeaderPartition(
                            partition=0, leader_epoch=0, current_leader_epoch=0
                        ),
                    ),
                ),
            )
        )
    )
    [answer] = response.topics[0].partitions
    assert (answer.error_code, answer.leader_epoch, answer.end_offset) == (NONE, 0, 2)
    response = conn.request(
        m.OffsetForLeaderEpochRequest(
            topics=(
                m.OffsetForLeaderTopic(
                    topic=topic,
                    partitions=(
                        m.OffsetForLeaderPartition(
                            partition=0, leader_epoch=0, current_leader_epoch=5
                        ),
                    ),
                ),
            )
        )
    )
    assert response.topics[0].partitions[0].error_code == ErrorCode.unknown_leader_epoch


# -- Metadata and DescribeCluster ----------------------------------------------------------------


def metadata(
    conn, names=None, *, version=12, allow_auto_topic_creation=True, include_ops=False, ids=None
):
    m = conn.module("metadata", version)
    topics = None
    if names is not None or ids is not None:
        topics = tuple(
            m.MetadataRequestTopic(
                name=n, **({"topic_id": uuid.UUID(int=0)} if version >= 10 else {})
            )
            for n in names or ()
        )
        topics += tuple(m.MetadataRequestTopic(name=None, topic_id=i) for i in ids or ())
    kwargs = {}
    if version >= 4:
        kwargs["allow_auto_topic_creation"] = allow_auto_topic_creation
    if version >= 8:
        kwargs["include_topic_authorized_operations"] = include_ops
    if 8 <= version <= 10:
        kwargs["include_cluster_authorized_operations"] = include_ops
    return conn.request(m.MetadataRequest(topics=topics, **kwargs))


def test_metadata_null_topics_lists_all_topics(conn, topic):
    create_topic(conn, topic, partitions=2)
    response = metadata(conn, None)
    described = {t.name: t for t in response.topics}
    assert topic in described and len(described[topic].partitions) == 2
    assert response.brokers[0].node_id == response.controller_id
    # Metadata v0: an empty list means all topics.
    v0 = metadata(conn, [], version=0)
    assert topic in {t.name for t in v0.topics}


def test_metadata_names_a_topic_asked_for_twice_once(conn, topic):
    create_topic(conn, topic)
    assert [t.name for t in metadata(conn, [topic, topic]).topics] == [topic]


def test_metadata_auto_creates_a_missing_topic_when_allowed(conn, topic):
    response = metadata(conn, [topic])
    [described] = response.topics
    assert (described.error_code, described.name, len(described.partitions)) == (NONE, topic, 1)
    assert produce(conn, topic, batch(b"a")).error_code == NONE


def test_metadata_does_not_create_when_the_request_disallows_it(conn, topic):
    [described] = metadata(conn, [topic], allow_auto_topic_creation=False).topics
    assert described.error_code == ErrorCode.unknown_topic_or_partition
    assert topic not in {t.name for t in metadata(conn, None).topics}


def test_metadata_does_not_create_when_the_broker_disables_auto_creation(topic):
    with Broker(auto_create_topics_enable=False) as b, RawConnection(b.bootstrap) as c:
        [described] = metadata(c, [topic]).topics
        assert described.error_code == ErrorCode.unknown_topic_or_partition
        [described] = metadata(c, [topic], version=1).topics
        assert described.error_code == ErrorCode.unknown_topic_or_partition


@pytest.mark.parametrize("name", ["bad name", "a/b", "x" * 250, ".", ".."])
@pytest.mark.parametrize("auto_create", [True, False])
def test_metadata_invalid_topic_name_is_invalid_topic_exception(conn, name, auto_create):
    # Kafka checks the name even when it will not create the topic.
    [described] = metadata(conn, [name], allow_auto_topic_creation=auto_create).topics
    assert described.error_code == ErrorCode.invalid_topic_exception


def test_metadata_by_topic_id(conn, topic):
    topic_id = create_topic(conn, topic, partitions=3)
    [described] = metadata(conn, ids=[topic_id]).topics
    assert (described.error_code, described.name, described.topic_id) == (NONE, topic, topic_id)
    assert len(described.partitions) == 3
    [unknown] = metadata(conn, ids=[uuid.uuid4()]).topics
    assert unknown.error_code == ErrorCode.unknown_topic_id


def test_metadata_authorized_operations_only_when_asked(conn, topic):
    from odradek.broker.authz import AUTHORIZED_OPERATIONS_OMITTED

    create_topic(conn, topic)
    [plain] = metadata(conn, [topic]).topics
    assert plain.topic_authorized_operations == AUTHORIZED_OPERATIONS_OMITTED
    [asked] = metadata(conn, [topic], include_ops=True).topics
    READ, WRITE, DESCRIBE = 3, 4, 8  # Kafka's AclOperation codes
    assert all(asked.topic_authorized_operations & (1 << op) for op in (READ, WRITE, DESCRIBE))
    v10 = metadata(conn, [topic], version=10, include_ops=True)
    assert v10.cluster_authorized_operations not in (AUTHORIZED_OPERATIONS_OMITTED, 0)


def test_describe_cluster(conn):
    m = conn.module("describe_cluster", 1)
    response = conn.request(m.DescribeClusterRequest(include_cluster_authorized_operations=False))
    assert response.error_code == NONE
    assert response.cluster_id == metadata(conn, None).cluster_id
    [node] = response.brokers
    assert (node.host, node.broker_id) == (conn.sock.getpeername()[0], response.controller_id)
    assert node.port == conn.sock.getpeername()[1]
    bad = conn.request(
        m.DescribeClusterRequest(include_cluster_authorized_operations=False, endpoint_type=9)
    )
    assert bad.error_code == ErrorCode.unsupported_endpoint_type


# -- Process lifecycle ---------------------------------------------------------------------------


def test_second_broker_on_the_same_data_dir_exits_with_one_clear_line(tmp_path, topic):
    import subprocess
    import sys

    data_dir = str(tmp_path / "data")
    with BrokerProcess(data_dir) as first:
        with RawConnection(first.bootstrap) as c:
            create_topic(c, topic)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "odradek",
                "serve",
                "--listeners",
                "PLAINTEXT://127.0.0.1:0",
                "--log-dirs",
                data_dir,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("odradek: "), second.stderr
        assert "Traceback" not in second.stderr
        assert data_dir in lines[-1] or "lock" in lines[-1].lower()
        # The first broker did not notice.
        with RawConnection(first.bootstrap) as c:
            assert_serves(c, topic)


def test_sigterm_stops_cleanly_and_the_next_start_does_no_recovery(tmp_path, topic):
    process = BrokerProcess(str(tmp_path / "data"))
    try:
        process.start()
        with RawConnection(process.bootstrap) as c:
            create_topic(c, topic)
            produce(c, topic, batch([b"a", b"b"]))
        assert process.stop() == 0
        assert any("stopped cleanly" in line for line in process.output)
        process.start()
        assert not any("recover" in line.lower() for line in process.output), process.output
        with RawConnection(process.bootstrap) as c:
            assert values_in(fetch(c, topic).records) == [b"a", b"b"]
        process.kill()
        process.start()
        assert any("recover" in line.lower() for line in process.output), process.output
    finally:
        process.stop()


# -- every served version ------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(3, 14))
def test_produce_every_served_version(conn, topic, version):
    topic_id = create_topic(conn, topic)
    response = produce(conn, topic, batch([b"a", b"b"]), version=version, topic_id=topic_id)
    assert (response.error_code, response.base_offset) == (NONE, 0)
    assert values_in(fetch(conn, topic).records) == [b"a", b"b"]


@pytest.mark.parametrize("version", range(4, 19))
def test_fetch_every_served_version(conn, topic, version):
    topic_id = create_topic(conn, topic)
    produce(conn, topic, batch([b"a", b"b"]))
    m = conn.module("fetch", version)
    fields = {f for f in m.FetchRequest.__dataclass_fields__}
    key = {"topic_id": topic_id} if version >= 13 else {"topic": topic}
    kwargs = {
        "max_wait": timedelta(0),
        "min_bytes": 1,
        "topics": (
            m.FetchTopic(
                **key,
                partitions=(
                    m.FetchPartition(partition=0, fetch_offset=1, partition_max_bytes=1 << 20),
                ),
            ),
        ),
    }
    if "forgotten_topics_data" in fields:
        kwargs["forgotten_topics_data"] = ()
    if "rack_id" in fields:
        kwargs["rack_id"] = ""
    if "replica_id" in fields and version >= 15:
        kwargs.pop("replica_id", None)
    response = conn.request(m.FetchRequest(**kwargs))
    [partition] = response.responses[0].partitions
    assert (partition.error_code, partition.high_watermark) == (NONE, 2)
    [header] = batches_in(partition.records)
    assert (header.base_offset, header.last_offset) == (0, 1)


@pytest.mark.parametrize("version", range(14))
def test_metadata_every_served_version(conn, topic, version):
    create_topic(conn, topic, partitions=2)
    response = metadata(conn, [topic], version=version)
    [described] = response.topics
    assert (described.error_code, described.name, len(described.partitions)) == (NONE, topic, 2)
    assert response.brokers[0].port == conn.sock.getpeername()[1]


@pytest.mark.parametrize("version", range(1, 11))
def test_list_offsets_every_served_version(conn, topic, version):
    create_topic(conn, topic)
    produce(conn, topic, batch([b"a", b"b", b"c"]))
    [latest] = list_offsets(conn, topic, -1, version=version)
    assert (latest.error_code, latest.offset) == (NONE, 3)


def test_a_partition_named_twice_in_one_produce_is_appended_once_with_the_last_records(conn, topic):
    # Kafka keeps a map of partition -> records: the later entry wins and gets the one answer.
    create_topic(conn, topic)
    m = conn.module("produce", 9)
    topic_data = (
        m.TopicProduceData(name=topic, partition_data=(m.PartitionProduceData(index=0, records=batch([b"first"])),)),
        m.TopicProduceData(name=topic, partition_data=(m.PartitionProduceData(index=0, records=batch([b"second"])),)),
    )
    response = conn.request(m.ProduceRequest(acks=-1, timeout=timedelta(seconds=5), topic_data=topic_data))
    answers = [p for t in response.responses for p in t.partition_responses]
    assert [(p.index, p.error_code, p.base_offset) for p in answers] == [(0, NONE, 0)]
    fetched = fetch(conn, topic)
    assert values_in(fetched.records) == [b"second"]
