r"""ListTransactions (API key 66), versions 0-2 (KIP-664, KIP-994, KIP-1152).

Lists the transactional ids this broker coordinates, with producer id and state. Filters, all
optional and combined with AND: states (v0+; unknown state names are echoed back in
`unknown_state_filters` and match nothing), producer ids (v0+), duration (v1+: only
transactions open at least `duration_filter` ms; -1: no filter), transactional id pattern (v2+:
a regular expression that must match the whole id, as Java's `Matcher.matches()`; null or empty:
no filter). The pattern is a Java regex in Kafka; we evaluate it with Python's `re.fullmatch`,
which agrees on the common syntax (classes, quantifiers, groups, alternation, possessive and
atomic forms) but not on every corner (Java's `\p{javaLowerCase}`, `\Q..\E` quoting).

Kafka authorizes DESCRIBE on each listed transactional id (unauthorized ones are left out); we
have no ACLs yet, so all are listed.
Errors: COORDINATOR_LOAD_IN_PROGRESS (some `__transaction_state` partition is loading),
INVALID_REGULAR_EXPRESSION (v2: the pattern does not compile).
"""

from __future__ import annotations

import re
from datetime import timedelta

from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms

NO_DURATION_FILTER = -1


def _answer(ctx, error_code, unknown_state_filters=(), transactions=()):
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=error_code,
        unknown_state_filters=tuple(unknown_state_filters),
        transaction_states=tuple(
            ctx.entity(
                "TransactionState",
                transactional_id=t.transactional_id,
                producer_id=t.producer_id,
                transaction_state=t.transaction_state,
            )
            for t in transactions
        ),
    )


async def handle(request, ctx):
    pattern_text = getattr(request, "transactional_id_pattern", None)
    pattern = None
    if pattern_text:
        try:
            pattern = re.compile(pattern_text)
        except (re.error, RecursionError, OverflowError):
            return _answer(ctx, ErrorCode.invalid_regular_expression)
    listed = ctx.broker.txns.coordinator.list_transactions(
        request.state_filters,
        request.producer_id_filters,
        int(getattr(request, "duration_filter", NO_DURATION_FILTER)),
        now_ms=now_ms(),
    )
    transactions = listed.transactions
    if pattern is not None:
        transactions = tuple(t for t in transactions if pattern.fullmatch(t.transactional_id))
    return _answer(ctx, ErrorCode(listed.error_code), listed.unknown_state_filters, transactions)
