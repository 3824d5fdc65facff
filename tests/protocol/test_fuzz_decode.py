"""Hostile request frames through the broker's decoding path, in-process, for every API and version.

For each API in `odradek.protocol.apis.APIS`, hypothesis draws valid requests of every version the
broker decodes (kio's `from_type`), encodes each with its request header, checks that the frame
decodes back to the same request, and then feeds the decoder `MUTATIONS_PER_FRAME` hostile
variants of it: flipped bits, random bytes, truncations, garbage appended, and length/count fields
overwritten with huge or negative values. Every input goes through `decode_like_broker`, the same
steps `broker/connection.py` takes before a handler sees a request (peek_api, the API table's
version checks, `framing.parse_request_header`, `check_request_bounds`, kio's reader).

Each input must either decode or raise an `Exception` (the connection closes on any Exception):
never a BaseException that would escape the connection, never a MemoryError, never an abort of
the process or a hang (each API is fuzzed in a forked child watched by the test, which names the
input that killed it), and never a Python-heap peak far beyond the frame's size (tracemalloc, on every
8th input), with the child's max RSS checked coarsely for native allocations. Deterministic
(derandomized hypothesis, seeded mutations).
"""

from __future__ import annotations

import io
import json
import mmap
import os
import random
import resource
import select
import signal
import struct
import time
import traceback
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_entity_module
from kio.serial import entity_writer
from kio.static.constants import EntityType
from kio.static.primitive import Records

from odradek.broker.connection import check_request_bounds
from odradek.protocol import apis, framing
from odradek.protocol.records import build_batch

EXAMPLES_PER_API = 25
MUTATIONS_PER_FRAME = 400  # with the frame itself: 401 inputs per example, >= 10,025 per API
HEAP_BYTES_PER_FRAME_BYTE = 512  # a 1-byte empty struct becomes a ~200-byte Python object
HEAP_CONSTANT_BYTES = 1024 * 1024
MAX_RSS_GROWTH_KIB = 256 * 1024
MAX_DECODE_S = 2.0
HEAP_SAMPLE_EVERY = (
    8  # tracemalloc slows every allocation; native (kio) allocations are the RSS check's
)
CHILD_TIMEOUT_S = 60.0
LAST_INPUT_BYTES = 1024 * 1024
HOSTILE_INT32 = (0x7FFFFFFF, -0x80000000, -1, -2, 0x10000000, 0x00FFFFFF, 65_536)
HOSTILE_INT16 = (0x7FFF, -0x8000, -1, -2)
HOSTILE_VARINT = (
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\x07",
    b"\x80\x80\x80\x80\x80\x01",
    b"\xfe\xff\xff\xff\x0f",
)

settings.register_profile(
    "odradek-fuzz",
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _records_strategy():
    batch = build_batch([(b"k", b"v" * 10, [("h", b"x")], 1_700_000_000_000)])
    return st.one_of(st.none(), st.binary(max_size=64), st.just(batch))


st.register_type_strategy(Records, _records_strategy())


class Refused(Exception):
    """The connection would close before decoding (unknown API, unsupported or unusable version)."""


def decode_like_broker(frame: bytes):
    """The request a connection would hand to a handler, decoded as `KafkaConnection._handle_frame`
    does; raises Refused, framing.FrameError or the reader's own exception otherwise."""
    api_key, api_version, _ = framing.peek_api(frame)
    api = apis.APIS.get(api_key)
    if api is None or not api.min_usable_version <= api_version <= api.max_version:
        raise Refused(f"{api_key} v{api_version}")
    request_class, reader, flexible = apis.request_codec(api_key, api_version)
    header = framing.parse_request_header(frame, flexible)
    check_request_bounds(request_class, frame, header.body_offset)
    request, _ = reader(frame, header.body_offset)
    return request


def encode_frame(request, correlation_id: int = 7, client_id: str | None = "fuzz") -> bytes:
    """Header and body, without the size prefix (what FrameReader hands the connection)."""
    header_version = 2 if request.__flexible__ else 1
    header_class = load_entity_module(
        "request_header", header_version, EntityType.header
    ).RequestHeader
    buffer = io.BytesIO()
    entity_writer(header_class)(
        buffer,
        header_class(
            request_api_key=request.__api_key__,
            request_api_version=request.__version__,
            correlation_id=correlation_id,
            client_id=client_id,
        ),
    )
    entity_writer(type(request))(buffer, request)
    return buffer.getvalue()


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    kind = rng.randrange(9)
    if kind == 0 and data:  # flip a few bits
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1 and data:  # random bytes at random places
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:  # truncate
        del data[rng.randrange(len(data) + 1) :]
    elif kind == 3:  # garbage appended
        data += rng.randbytes(rng.randint(1, 64))
    elif kind == 4 and len(data) >= 4:  # a length or count read as int32
        position = rng.randrange(len(data) - 3)
        struct.pack_into(">i", data, position, rng.choice(HOSTILE_INT32))
    elif kind == 5 and len(data) >= 2:  # a string length read as int16
        position = rng.randrange(len(data) - 1)
        struct.pack_into(">h", data, position, rng.choice(HOSTILE_INT16))
    elif kind == 6 and data:  # a compact length or tag read as a huge uvarint
        position = rng.randrange(len(data))
        data[position : position + 1] = rng.choice(HOSTILE_VARINT)
    elif kind == 7 and len(data) > 8:  # a slice repeated
        start = rng.randrange(8, len(data))
        end = min(len(data), start + rng.randint(1, 32))
        data[end:end] = data[start:end] * rng.randint(1, 8)
    else:  # the header kept, the body random
        keep = min(len(data), 10)
        data = data[:keep] + rng.randbytes(rng.randint(0, 2 * len(frame) + 8))
    return bytes(data)


class Budget:
    """Feeds inputs to the decoder and checks each one's behaviour and heap peak (tracemalloc
    must be on). With `last_input`, each input is copied there first (see `in_child`)."""

    def __init__(self, last_input: mmap.mmap | None = None) -> None:
        self.last_input = last_input
        self.inputs = 0
        self.decoded = 0
        self.refused = 0
        self.errors: dict[str, int] = {}

    def feed(self, frame: bytes) -> object | None:
        self.inputs += 1
        traced = self.inputs % HEAP_SAMPLE_EVERY == 0
        if self.last_input is not None and len(frame) + 4 <= LAST_INPUT_BYTES:
            struct.pack_into(">i", self.last_input, 0, len(frame))
            self.last_input[4 : 4 + len(frame)] = frame
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        try:
            request = decode_like_broker(frame)
        except Refused:
            self.refused += 1
            request = None
        except MemoryError:  # pragma: no cover - the failure this test exists to find
            pytest.fail(f"MemoryError decoding a {len(frame)}-byte frame: {frame[:64].hex()}")
        except Exception as exc:  # noqa: BLE001 - any failure is data here
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            request = None
        else:
            self.decoded += 1
        elapsed_s = time.perf_counter() - started
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            allowed = HEAP_BYTES_PER_FRAME_BYTE * len(frame) + HEAP_CONSTANT_BYTES
            assert peak <= allowed, (
                f"decoding a {len(frame)}-byte frame peaked at {peak} heap bytes: {frame[:64].hex()}"
            )
        assert elapsed_s < MAX_DECODE_S, (
            f"decoding a {len(frame)}-byte frame took {elapsed_s:.2f} s"
        )
        return request


def _versions(api: apis.Api) -> list[int]:
    return list(range(api.min_usable_version, api.max_version + 1))


def in_child(fn, timeout_s: float = CHILD_TIMEOUT_S):
    """Run `fn(last_input)` in a forked child and return its JSON-able result.

    A native decoder can abort the whole process (a Rust allocation failure is not an exception),
    and can hang; either must fail one test, not the session. The child writes each input to a
    shared buffer before decoding it, so the parent can name the input that killed it.
    """
    last_input = mmap.mmap(-1, LAST_INPUT_BYTES)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(read_fd)
        resource.setrlimit(
            resource.RLIMIT_CORE, (0, 0)
        )  # an abort should not spend seconds on a core
        code = 0
        try:
            payload = json.dumps({"result": fn(last_input)})
        except BaseException:  # noqa: BLE001 - any failure is data here
            payload, code = json.dumps({"error": traceback.format_exc()}), 1
        with os.fdopen(write_fd, "w") as out:
            out.write(payload)
        os._exit(code)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout_s
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"decoding hung for {timeout_s} s; last input: {_last(last_input)}")
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        pytest.fail(
            f"the decoder killed the process with signal {os.WTERMSIG(status)}; "
            f"last input (frame without size prefix): {_last(last_input)}"
        )
    outcome = json.loads(b"".join(chunks) or b"{}")
    if "error" in outcome:
        pytest.fail(outcome["error"])
    return outcome["result"]


def _last(buffer: mmap.mmap) -> str:
    (size,) = struct.unpack_from(">i", buffer, 0)
    return buffer[4 : 4 + size].hex()


def fuzz_api(api_key: int, last_input: mmap.mmap) -> dict:
    api = apis.APIS[api_key]
    budget = Budget(last_input)
    requests = st.sampled_from(_versions(api)).flatmap(
        lambda version: st.from_type(apis.request_codec(api_key, version)[0])
    )

    @settings(settings.get_profile("odradek-fuzz"), max_examples=EXAMPLES_PER_API)
    @given(request=requests, seed=st.integers(0, 2**32 - 1))
    def run(request, seed):
        frame = encode_frame(request)
        assert budget.feed(frame) == request, "a valid frame must decode to the request it encodes"
        rng = random.Random(seed)
        for _ in range(MUTATIONS_PER_FRAME):
            budget.feed(mutate(frame, rng))

    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib
    assert growth_kib < MAX_RSS_GROWTH_KIB, f"max RSS grew by {growth_kib} KiB"
    return {
        "inputs": budget.inputs,
        "decoded": budget.decoded,
        "refused": budget.refused,
        "errors": budget.errors,
        "rss_growth_kib": growth_kib,
    }


# History: before `check_request_bounds`, kio 0.6.5's native reader sized an array from the count
# on the wire before reading any element, and a count near 2**32 aborted the broker process
# (Rust allocation failure). This fuzzer found it for every API with an array; a 30-byte
# Metadata v9 frame did it:
METADATA_V9_HOSTILE_COUNT = bytes.fromhex("0003000900000007000466757a7a00feffffff0f010001000000")


def test_hostile_array_count_is_refused_without_aborting():
    def decode(last_input):
        try:
            decode_like_broker(METADATA_V9_HOSTILE_COUNT)
        except Exception as exc:  # noqa: BLE001 - any failure is data here
            return type(exc).__name__
        return "decoded"

    assert in_child(decode) == "FrameError"


def _api_params():
    return [pytest.param(key, id=apis.APIS[key].name) for key in sorted(apis.APIS)]


@pytest.mark.parametrize("api_key", _api_params())
def test_fuzz_decode_every_version_of_api(api_key):
    api = apis.APIS[api_key]
    stats = in_child(lambda last_input: fuzz_api(api_key, last_input))
    print(f"\nfuzz-decode {api.name} v{api.min_usable_version}-{api.max_version}: {stats}")
    assert stats["inputs"] >= 10_000


def test_fuzz_decode_advertised_but_unusable_versions_are_refused_before_decoding():
    budget = Budget()  # refused before any decoding: safe in-process
    rng = random.Random(5)
    for api in apis.APIS.values():
        for version in range(api.min_version, api.min_usable_version):
            for _ in range(200):
                frame = struct.pack(">hhih", api.key, version, 1, -1) + rng.randbytes(
                    rng.randint(0, 64)
                )
                assert budget.feed(frame) is None
    assert budget.decoded == 0


def test_fuzz_decode_random_headers_and_bodies():
    """Frames that are random from the first byte, with api keys and versions near the table's."""
    stats = in_child(random_frames)
    print(f"\nfuzz-decode random: {stats}")


def random_frames(last_input: mmap.mmap) -> dict:
    budget = Budget(last_input)
    rng = random.Random(11)
    keys = sorted(apis.APIS) + [-1, 999, 0x7FFF]
    for _ in range(20_000):
        api_key = rng.choice(keys)
        api = apis.APIS.get(api_key)
        version = rng.randint(-1, (api.max_version if api else 3) + 2)
        client_id_length = rng.choice((-1, -2, 0, 4, 0x7FFF))
        frame = struct.pack(">hhih", api_key, version, rng.randrange(2**31), client_id_length)
        budget.feed(frame + rng.randbytes(rng.randint(0, 128)))
    return {
        "inputs": budget.inputs,
        "decoded": budget.decoded,
        "refused": budget.refused,
        "errors": budget.errors,
    }
