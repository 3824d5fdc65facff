"""`odradek transactions`: list, describe and abort transactions, as Kafka's
kafka-transactions.sh does.

    odradek transactions list [--state STATE ...] [--producer-id P ...] [--duration-ms MS]
                              [--transactional-id-pattern REGEX]
    odradek transactions describe --transactional-id ID
    odradek transactions describe-producers --topic T --partition P
    odradek transactions find-hanging [--broker-id N] [--topic T [--partition P]]
                                      [--max-transaction-timeout-ms MS]
    odradek transactions abort --topic T --partition P --start-offset O
    odradek transactions abort --topic T --partition P --producer-id P --producer-epoch E
                               [--coordinator-epoch C]

`abort --start-offset` asks the partition's leader for its active producers (DescribeProducers),
picks the one whose open transaction starts at that offset and writes an ABORT marker for it
(WriteTxnMarkers); with no such producer it refuses and says which offsets are open. This is
for a hanging transaction, one its coordinator no longer knows about: aborting a live one
behind its coordinator's back makes the producer's next commit fail. `find-hanging` lists the
candidates: open transactions whose producer wrote nothing for longer than
transaction.max.timeout.ms and that no coordinator holds as live.

Tables are Kafka's columns, tab-separated as kafka-transactions.sh prints them. Only argparse is
imported at start; the client and kio load when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_MAX_TRANSACTION_TIMEOUT_MS = 900_000  # transaction.max.timeout.ms


def add_parser(commands: Any, add_bootstrap: Any) -> None:
    """Add the `transactions` command and its actions to the CLI's subparsers."""
    transactions = commands.add_parser(
        "transactions", help="list, describe and abort transactions"
    )
    actions = transactions.add_subparsers(dest="transactions_command", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="list transactions on every broker")
    listing.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help="only transactions in this state (Empty, Ongoing, PrepareCommit, PrepareAbort, "
        "CompleteCommit, CompleteAbort, Dead, PrepareEpochFence), repeatable",
    )
    listing.add_argument(
        "--producer-id",
        type=int,
        action="append",
        default=[],
        metavar="P",
        help="only transactions of this producer id, repeatable",
    )
    listing.add_argument(
        "--duration-ms",
        type=_non_negative,
        default=None,
        metavar="MS",
        help="only transactions open at least this long",
    )
    listing.add_argument(
        "--transactional-id-pattern",
        metavar="REGEX",
        help="only transactional ids that this regular expression matches whole",
    )
    add_bootstrap(listing)

    describe = actions.add_parser("describe", help="describe one transactional id")
    describe.add_argument("--transactional-id", required=True, metavar="ID")
    add_bootstrap(describe)

    producers = actions.add_parser(
        "describe-producers", help="active producers of a partition and their open transactions"
    )
    producers.add_argument("--topic", required=True)
    producers.add_argument("--partition", type=_non_negative, required=True, metavar="P")
    add_bootstrap(producers)

    hanging = actions.add_parser(
        "find-hanging",
        help="open transactions that no coordinator will ever end (abort them with `abort`)",
    )
    hanging.add_argument("--broker-id", type=_non_negative, metavar="N",
                         help="only partitions led by this broker (default: every broker)")
    hanging.add_argument("--topic", help="only this topic")
    hanging.add_argument("--partition", type=_non_negative, metavar="P",
                         help="only this partition (with --topic)")
    hanging.add_argument(
        "--max-transaction-timeout-ms",
        type=_non_negative,
        default=DEFAULT_MAX_TRANSACTION_TIMEOUT_MS,
        metavar="MS",
        help="the brokers' transaction.max.timeout.ms: a transaction whose producer wrote "
        f"nothing for longer is a candidate (default {DEFAULT_MAX_TRANSACTION_TIMEOUT_MS})",
    )
    add_bootstrap(hanging)

    abort = actions.add_parser("abort", help="abort a hanging transaction on one partition")
    abort.add_argument("--topic", required=True)
    abort.add_argument("--partition", type=_non_negative, required=True, metavar="P")
    which = abort.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--start-offset",
        type=_non_negative,
        metavar="O",
        help="the first offset of the transaction to abort (finds its producer)",
    )
    which.add_argument(
        "--producer-id", type=_non_negative, metavar="P", help="with --producer-epoch"
    )
    abort.add_argument("--producer-epoch", type=_non_negative, metavar="E")
    abort.add_argument(
        "--coordinator-epoch", type=_non_negative, default=0, metavar="C", help="default 0"
    )
    add_bootstrap(abort)


def _non_negative(text: str) -> int:
    from odradek.cli import _non_negative as parse

    return parse(text)


async def run(client: Any, args: argparse.Namespace) -> int:
    """Run one `transactions` action with a connected `odradek.client.client.Client`."""
    from odradek.client.transactions import TransactionAdmin

    action = {
        "list": _list,
        "describe": _describe,
        "describe-producers": _describe_producers,
        "find-hanging": _find_hanging,
        "abort": _abort,
    }[args.transactions_command]
    return await action(TransactionAdmin(client), args)


def _table(rows: list[tuple[Any, ...]]) -> str:
    return "\n".join("\t".join(str(cell) for cell in row) for row in rows)


async def _list(admin: Any, args: argparse.Namespace) -> int:
    listed = await admin.list_transactions(
        args.state,
        args.producer_id,
        duration_ms=-1 if args.duration_ms is None else args.duration_ms,
        transactional_id_pattern=args.transactional_id_pattern,
    )
    rows: list[tuple[Any, ...]] = [("TransactionalId", "Coordinator", "ProducerId", "TransactionState")]
    rows += [(t.transactional_id, t.coordinator_id, t.producer_id, t.state) for t in listed]
    print(_table(rows))
    return 0


def describe_rows(d: Any, now_ms: int) -> list[tuple[Any, ...]]:
    """kafka-transactions.sh describe's table for one TransactionDescription."""
    start = d.transaction_start_time_ms
    open_ = start >= 0 and d.state not in ("Empty", "CompleteCommit", "CompleteAbort", "Dead")
    return [
        (
            "CoordinatorId",
            "TransactionalId",
            "ProducerId",
            "ProducerEpoch",
            "TransactionState",
            "TransactionTimeoutMs",
            "CurrentTransactionStartTimeMs",
            "TransactionDurationMs",
            "TopicPartitions",
        ),
        (
            d.coordinator_id,
            d.transactional_id,
            d.producer_id,
            d.producer_epoch,
            d.state,
            d.transaction_timeout_ms,
            start if open_ else "None",
            max(0, now_ms - start) if open_ else "None",
            ",".join(f"{t}-{p}" for t, p in d.partitions),
        ),
    ]


async def _describe(admin: Any, args: argparse.Namespace) -> int:
    import time

    described = await admin.describe_transaction(args.transactional_id)
    print(_table(describe_rows(described, time.time_ns() // 1_000_000)))
    return 0


def _none_if_negative(value: int) -> Any:
    return "None" if value < 0 else value


async def _describe_producers(admin: Any, args: argparse.Namespace) -> int:
    producers = await admin.describe_producers(args.topic, args.partition)
    rows: list[tuple[Any, ...]] = [
        (
            "ProducerId",
            "ProducerEpoch",
            "LatestCoordinatorEpoch",
            "LastSequence",
            "LastTimestamp",
            "CurrentTransactionStartOffset",
        )
    ]
    rows += [
        (
            p.producer_id,
            p.producer_epoch,
            p.coordinator_epoch,
            p.last_sequence,
            p.last_timestamp_ms,
            _none_if_negative(p.current_txn_start_offset),
        )
        for p in producers
    ]
    print(_table(rows))
    return 0


async def _find_hanging(admin: Any, args: argparse.Namespace) -> int:
    import time

    from odradek.cli import EXIT_USAGE, CliError

    if args.partition is not None and args.topic is None:
        raise CliError("--partition needs --topic", EXIT_USAGE)
    now_ms = time.time_ns() // 1_000_000
    hanging = await admin.find_hanging(
        now_ms=now_ms,
        broker_id=args.broker_id,
        topic=args.topic,
        partition=args.partition,
        max_transaction_timeout_ms=args.max_transaction_timeout_ms,
    )
    rows: list[tuple[Any, ...]] = [
        ("Topic", "Partition", "ProducerId", "ProducerEpoch", "CoordinatorEpoch", "StartOffset",
         "LastTimestamp", "Duration(min)")
    ]
    rows += [
        (
            h.topic,
            h.partition,
            h.producer.producer_id,
            h.producer.producer_epoch,
            h.producer.coordinator_epoch,
            h.producer.current_txn_start_offset,
            h.producer.last_timestamp_ms,
            max(0, now_ms - h.producer.last_timestamp_ms) // 60_000,
        )
        for h in hanging
    ]
    print(_table(rows))
    return 0


async def _abort(admin: Any, args: argparse.Namespace) -> int:
    from odradek.cli import EXIT_USAGE, CliError
    from odradek.client.transactions import NoOpenTransactionError

    if args.start_offset is not None:
        if args.producer_epoch is not None:
            raise CliError("--producer-epoch goes with --producer-id, not --start-offset", EXIT_USAGE)
        try:
            producer = await admin.abort_transaction(args.topic, args.partition, args.start_offset)
        except NoOpenTransactionError as exc:
            raise CliError(f"cannot abort: {exc}") from None
        producer_id, producer_epoch = producer.producer_id, producer.producer_epoch
    else:
        if args.producer_epoch is None:
            raise CliError("--producer-id needs --producer-epoch", EXIT_USAGE)
        producer_id, producer_epoch = args.producer_id, args.producer_epoch
        await admin.write_txn_marker(
            args.topic,
            args.partition,
            producer_id,
            producer_epoch,
            args.coordinator_epoch,
            commit=False,
        )
    print(
        f"Aborted the transaction of producer {producer_id} (epoch {producer_epoch}) "
        f"on {args.topic}-{args.partition}."
    )
    return 0
