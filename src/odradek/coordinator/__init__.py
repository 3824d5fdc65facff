"""Coordinators: deterministic, synchronous cores that the broker's handlers call.

group.py              ClassicGroup: the classic group state machine (one TRANSITIONS table)
offsets.py            OffsetStore: committed offsets per group/topic/partition
records.py            __consumer_offsets keys and values, byte-exact with Kafka; partition_for_group
messages.py           version-independent requests/responses (handlers convert from/to kio)
group_coordinator.py  GroupCoordinator: the facade over groups, offsets, loading and timers
harness.py            GroupHarness: in-memory log + simulated clock for tests and simulations
"""
