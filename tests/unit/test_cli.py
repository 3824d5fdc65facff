"""The `odradek` command line: argument parsing, serve overrides, produce batching, consume
formatting, and whole commands against the in-process fake broker of test_cli_client."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from odradek import cli
from odradek.client.partitioner import partition_for_key
from odradek.protocol.records import Record, iter_headers, iter_records
from tests.unit.test_cli_client import FakeBrokerThread

# -- parsing -------------------------------------------------------------------------------------


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_serve_flags_become_kafka_config_names():
    args = parse(
        "serve",
        "--config",
        "server.properties",
        "--listeners",
        "PLAINTEXT://127.0.0.1:0",
        "--log-dirs",
        "/data",
        "--node-id",
        "3",
        "--override",
        "num.partitions=4",
        "--override",
        "log.dirs=/ignored",
    )
    assert args.config == "server.properties"
    assert cli.serve_overrides(args) == {
        "num.partitions": "4",
        "listeners": "PLAINTEXT://127.0.0.1:0",
        "log.dirs": "/data",
        "node.id": "3",
    }


def test_serve_calls_the_broker_with_config_path_and_overrides(monkeypatch):
    calls = []
    fake = types.ModuleType("odradek.broker.server")
    fake.serve = lambda path, overrides: calls.append((path, overrides)) or 7
    monkeypatch.setitem(sys.modules, "odradek.broker.server", fake)
    assert cli.main(["serve", "--log-dirs", "/d", "--override", "a.b=c=d"]) == 7
    assert calls == [(None, {"a.b": "c=d", "log.dirs": "/d"})]


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--override", "novalue"],
        ["serve", "--node-id", "-1"],
        ["topics", "create", "t", "--partitions", "0"],
        ["produce", "t", "--compression", "brotli"],
        ["produce", "t", "--acks", "2"],
        ["consume", "t", "--from-beginning", "--offset", "3"],
        ["consume", "t", "--max-messages", "0"],
        ["topics"],
        [],
    ],
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_defaults():
    args = parse("consume", "t")
    assert args.bootstrap_server == "127.0.0.1:9092"
    assert args.offset is None and not args.from_beginning and args.format is None
    produce = parse("produce", "t", "--acks", "all")
    assert produce.acks == -1 and produce.compression == "none"
    assert parse("produce", "t", "--acks", "0").acks == 0
    assert parse("consume", "t", "--offset", "earliest").offset == "earliest"


def test_help_starts_without_importing_the_client_or_kio():
    code = (
        "import sys; from odradek import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('kio', 'odradek.client', 'odradek.broker'))))"
    )
    out = subprocess.run(  # noqa: PLW1510 (the exit code is asserted)
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    ).stdout
    assert out.strip().endswith("[]")


# -- produce batching ----------------------------------------------------------------------------


def batcher(**options):
    defaults = {
        "key_separator": None,
        "fixed_partition": None,
        "batch_size_bytes": 1 << 20,
        "topic": "t",
        "clock_ms": lambda: 42,
    }
    return cli.LineBatcher([0, 1, 2, 3], **{**defaults, **options})


def test_keyed_lines_go_where_kafkas_default_partitioner_puts_them():
    b = batcher(key_separator=b":")
    assert b.feed(b"user-1:a\nuser-2:b\nuser-1:c\n") == []
    batches = dict(b.finish())
    for key, values in ((b"user-1", [b"a", b"c"]), (b"user-2", [b"b"])):
        partition = partition_for_key(key, 4)
        assert [(r[0], r[1]) for r in batches[partition] if r[0] == key] == [
            (key, v) for v in values
        ]
    assert all(r[3] == 42 for records in batches.values() for r in records)


def test_value_may_contain_the_separator_and_a_line_without_it_is_an_error():
    b = batcher(key_separator=b"=")
    b.feed(b"k=v=w\n")
    assert [(r[0], r[1]) for _, rs in b.finish() for r in rs] == [(b"k", b"v=w")]
    with pytest.raises(cli.CliError, match="line 2 has no key separator"):
        batcher(key_separator=b"=").feed(b"k=v\nnovalue\n")


def test_lines_split_across_reads_and_crlf_and_a_last_line_without_newline():
    b = batcher(fixed_partition=2)
    b.feed(b"hel")
    b.feed(b"lo\r\nwor")
    batches = b.finish() if not b.feed(b"ld") else None
    assert [(p, [r[1] for r in rs]) for p, rs in batches] == [(2, [b"hello", b"world"])]


def test_batches_are_sent_when_they_reach_the_batch_size():
    b = batcher(fixed_partition=0, batch_size_bytes=100)
    ready = b.feed(b"x" * 60 + b"\n" + b"y" * 60 + b"\n" + b"z\n")
    assert [[r[1][:1] for r in rs] for _, rs in ready] == [[b"x", b"y"]]
    assert [[r[1] for r in rs] for _, rs in b.finish()] == [[b"z"]]


def test_keyless_lines_stick_to_a_partition_per_batch_then_move_on():
    b = batcher(batch_size_bytes=60)  # each line counts 22 + 8 bytes: two lines fill a batch
    ready = b.feed(b"".join(b"%022d\n" % i for i in range(6)))
    assert [p for p, _ in ready] == [0, 1, 2]
    assert all(len(rs) == 2 for _, rs in ready)


def test_unknown_fixed_partition_is_an_error():
    with pytest.raises(cli.CliError, match="partition 9 does not exist"):
        batcher(fixed_partition=9)


def test_overlong_line_is_refused():
    with pytest.raises(cli.CliError, match="longer than"):
        cli.LineBatcher(
            [0], key_separator=None, fixed_partition=None, batch_size_bytes=10, max_line_bytes=8
        ).feed(b"123456789")


# -- consume formatting --------------------------------------------------------------------------

RECORD = Record(offset=5, timestamp=1700, key=b"k", value=b"v", headers=(("h", b"1"),))


def test_format_directives():
    render = cli.compile_format(r"%t|%p|%o|%k|%v|%T|%h|%K|%S|%%\t")
    assert render(RECORD, "top", 3) == b"top|3|5|k|v|1700|h=1|1|1|%\t\n"
    assert cli.compile_format("%v\\n")(RECORD, "t", 0) == b"v\n"  # no doubled newline
    null = Record(0, 0, None, None)
    assert cli.compile_format("%K %S [%k][%v]")(null, "t", 0) == b"-1 -1 [][]\n"
    with pytest.raises(cli.CliError, match="%x"):
        cli.compile_format("%x")


def test_properties_formatter_is_kafkas_default_message_formatter():
    render = cli.properties_formatter(
        {
            "print.key": "true",
            "print.offset": "true",
            "print.timestamp": "true",
            "print.partition": "true",
        }
    )
    assert render(RECORD, "t", 2) == b"CreateTime:1700\tPartition:2\tOffset:5\tk\tv\n"
    keyed = cli.properties_formatter({"print.key": "true", "key.separator": ":"})
    assert keyed(Record(0, 0, None, b"v"), "t", 0) == b"null:v\n"
    with pytest.raises(cli.CliError, match="unknown --property"):
        cli.properties_formatter({"print.kee": "true"})


# -- whole commands against the fake broker ------------------------------------------------------


@pytest.fixture
def broker():
    with FakeBrokerThread() as fake:
        yield fake


def run_cli(argv, stdin: bytes = b"", monkeypatch=None):
    """main() in this process with stdin from a pipe; returns (exit code, stdout, stderr)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, stdin)
    os.close(write_fd)
    proc_stdin = os.fdopen(read_fd, "rb")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = proc_stdin
    sys.stdout = os.fdopen(out_w, "w", buffering=1)
    sys.stderr = os.fdopen(err_w, "w", buffering=1)
    try:
        code = cli.main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout.close()
        sys.stderr.close()
        sys.stdin, sys.stdout, sys.stderr = saved
        proc_stdin.close()
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        return code, out.read(), err.read().decode()


def test_topics_create_list_describe_delete(broker):
    b = ["--bootstrap-server", broker.bootstrap]
    assert run_cli(
        ["topics", "create", "events", "--partitions", "2", "--config", "retention.ms=5", *b]
    ) == (0, b"Created topic events.\n", "")
    code, _, err = run_cli(["topics", "create", "events", *b])
    assert code == 1 and err == (
        "odradek: topic 'events': Topic 'events' already exists. (TOPIC_ALREADY_EXISTS)\n"
    )
    assert run_cli(["topics", "create", "events", "--if-not-exists", *b])[0] == 0
    assert run_cli(["topics", "list", *b]) == (0, b"events\n", "")
    code, out, _ = run_cli(["topics", "describe", "events", *b])
    assert code == 0
    lines = out.decode().splitlines()
    assert lines[0].startswith(
        "Topic: events\tTopicId: \tPartitionCount: 2\tReplicationFactor: 1\t"
    )
    assert lines[0].endswith("Configs: retention.ms=5")
    assert lines[1:] == [
        "\tTopic: events\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1",
        "\tTopic: events\tPartition: 1\tLeader: 1\tReplicas: 1\tIsr: 1",
    ]
    assert run_cli(["topics", "delete", "events", *b]) == (0, b"", "")
    code, _, err = run_cli(["topics", "delete", "events", *b])
    assert code == 1 and "does not exist (UNKNOWN_TOPIC_OR_PARTITION)" in err
    assert run_cli(["topics", "delete", "events", "--if-exists", *b])[0] == 0
    code, _, err = run_cli(["topics", "describe", "events", *b])
    assert (code, err) == (1, "odradek: topic 'events' does not exist\n")


def test_produce_keyed_lines_then_consume_them_with_a_format(broker):
    b = ["--bootstrap-server", broker.bootstrap]
    broker.topics["t"] = [bytearray() for _ in range(3)]
    lines = b"".join(b"key-%d:value-%d\n" % (i, i) for i in range(30))
    assert run_cli(
        ["produce", "t", "--key-separator", ":", "--compression", "zstd", *b], lines
    ) == (0, b"", "")
    for partition, log in enumerate(broker.topics["t"]):
        for header in iter_headers(log):
            assert header.compression == 4
            for record in iter_records(
                bytes(log[header.position : header.position + header.size_bytes])
            ):
                assert partition_for_key(record.key, 3) == partition
    code, out, err = run_cli(
        [
            "consume",
            "t",
            "--from-beginning",
            "--max-messages",
            "30",
            "--timeout-ms",
            "3000",
            "--format",
            "%k=%v",
            *b,
        ]
    )
    assert code == 0, err
    assert sorted(out.splitlines()) == sorted(b"key-%d=value-%d" % (i, i) for i in range(30))
    assert err == "Processed a total of 30 messages\n"


def test_consume_one_partition_from_an_offset_with_properties(broker):
    b = ["--bootstrap-server", broker.bootstrap]
    broker.topics["t"] = [bytearray(), bytearray()]
    assert run_cli(["produce", "t", "--partition", "1", "--verbose", *b], b"a\nb\nc\n")[0] == 0
    code, out, err = run_cli(
        [
            "consume",
            "t",
            "--partition",
            "1",
            "--offset",
            "1",
            "--timeout-ms",
            "300",
            "--property",
            "print.offset=true",
            *b,
        ]
    )
    assert code == 0, err
    assert out == b"Offset:1\tb\nOffset:2\tc\n"


def test_consume_by_timestamp_and_default_latest(broker):
    from odradek.protocol.records import build_batch

    b = ["--bootstrap-server", broker.bootstrap]
    broker.topics["t"] = [bytearray()]
    broker.append("t", 0, build_batch([(None, b"old", [], 1000), (None, b"new", [], 5000)]))
    code, out, _ = run_cli(["consume", "t", "--timestamp", "4000", "--timeout-ms", "300", *b])
    assert (code, out) == (0, b"new\n")
    code, out, _ = run_cli(
        ["consume", "t", "--timeout-ms", "300", *b]
    )  # latest: nothing new arrives
    assert (code, out) == (0, b"")


def test_consume_errors_are_one_line(broker):
    b = ["--bootstrap-server", broker.bootstrap]
    code, _, err = run_cli(["consume", "missing", "--timeout-ms", "100", *b])
    assert (code, err) == (1, "odradek: topic 'missing' does not exist\n")
    broker.topics["t"] = [bytearray()]
    code, _, err = run_cli(["consume", "t", "--group", "g", *b])  # the fake serves no group APIs
    assert code == 1 and "does not serve the group APIs" in err
    code, _, err = run_cli(["consume", "t", "--offset", "3", *b])
    assert code == 2 and "--offset N needs --partition" in err
    code, _, err = run_cli(["consume", "t", "--partition", "4", *b])
    assert code == 1 and "partition 4 does not exist" in err


def test_produce_line_without_separator_fails_clearly(broker):
    broker.topics["t"] = [bytearray()]
    code, _, err = run_cli(
        ["produce", "t", "--key-separator", ":", "--bootstrap-server", broker.bootstrap],
        b"a:1\nnope\n",
    )
    assert code == 1 and err == "odradek: line 2 has no key separator ':'\n"


def test_unreachable_broker_is_one_line_without_traceback():
    proc = subprocess.run(  # noqa: PLW1510 (the exit code is asserted)
        [sys.executable, "-m", "odradek", "topics", "list", "--bootstrap-server", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr == "odradek: cannot connect to 127.0.0.1:1: Connection refused\n"


def test_produce_and_consume_as_subprocesses(broker):
    b = ["--bootstrap-server", broker.bootstrap]
    broker.topics["t"] = [bytearray()]
    produced = subprocess.run(  # noqa: PLW1510 (the exit code is asserted)
        [sys.executable, "-m", "odradek", "produce", "t", *b],
        input=b"one\ntwo\n",
        capture_output=True,
        timeout=30,
    )
    assert (produced.returncode, produced.stdout, produced.stderr) == (0, b"", b"")
    consumed = subprocess.run(  # noqa: PLW1510 (the exit code is asserted)
        [
            sys.executable,
            "-m",
            "odradek",
            "consume",
            "t",
            "--from-beginning",
            "--max-messages",
            "2",
            *b,
        ],
        capture_output=True,
        timeout=30,
    )
    assert consumed.returncode == 0 and consumed.stdout == b"one\ntwo\n"


def test_produce_error_exits_promptly_while_stdin_stays_open(broker):
    broker.topics["t"] = [bytearray()]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "odradek",
            "produce",
            "t",
            "--key-separator",
            ":",
            "--bootstrap-server",
            broker.bootstrap,
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        proc.stdin.write(b"k:v\nbad line\n")
        proc.stdin.flush()  # and keep stdin open, like a terminal
        assert proc.wait(timeout=15) == 1
        assert proc.stderr.read() == b"odradek: line 2 has no key separator ':'\n"
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stderr.close()


def test_produce_sends_a_lingering_batch_before_stdin_ends(broker):
    import time

    broker.topics["t"] = [bytearray()]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "odradek",
            "produce",
            "t",
            "--linger-ms",
            "50",
            "--bootstrap-server",
            broker.bootstrap,
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        proc.stdin.write(b"early\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 15
        while broker.log_end_offset("t", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert broker.log_end_offset("t", 0) == 1  # sent while stdin is still open
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.stderr.close()


def test_consume_interrupted_reports_its_count(broker):
    import signal
    import time

    broker.topics["t"] = [bytearray()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "consume", "t", "--bootstrap-server", broker.bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while (
            not any(api_key == 1 for api_key, _ in broker.requests) and time.monotonic() < deadline
        ):
            time.sleep(0.02)  # wait until it is polling
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 130
        assert err == b"Processed a total of 0 messages\n"
    finally:
        proc.kill()


def test_ctrl_c_stops_a_command_even_if_something_swallowed_the_first_cancellation(broker):
    import argparse
    import asyncio
    import signal
    import time

    async def stubborn(client, args):
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # as a library's cleanup that loses the cancellation
        await asyncio.sleep(30)
        return 0

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        cli._run(stubborn, argparse.Namespace(bootstrap_server=broker.bootstrap))
    assert time.monotonic() - started < 1 + 2 * cli.INTERRUPT_RETRY_S
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
