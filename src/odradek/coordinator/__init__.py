"""Coordinators: deterministic, synchronous cores that the broker's handlers call.

group.py              ClassicGroup: the classic group state machine (one TRANSITIONS table)
offsets.py            OffsetStore: committed offsets per group/topic/partition
records.py            __consumer_offsets keys and values, byte-exact with Kafka; partition_for_group
messages.py           version-independent requests/responses (handlers convert from/to kio)
group_coordinator.py  GroupCoordinator: the facade over groups, offsets, loading and timers
harness.py            GroupHarness: in-memory log + simulated clock for tests and simulations

transaction.py        the transaction state machine (one TRANSITIONS table) and its metadata
txn_records.py        __transaction_state keys and values, byte-exact with Kafka
txn_messages.py       version-independent transaction requests/responses, MarkerRequest
txn_coordinator.py    TransactionCoordinator: the facade (init, add, end, markers, timeouts, loading)
txn_harness.py        TxnHarness: in-memory log, simulated clock and markers for tests
(The transaction coordinator is not wired into the broker yet: issue #8.)
"""
