"""The log on disk, in Kafka's layout. No network, no event loop: plain synchronous calls.

    fs.py              FileSystem: the one seam to the filesystem (RealFileSystem; a fake in tests)
    index.py           OffsetIndex (.index), TimeIndex (.timeindex)
    txn_index.py       TransactionIndex (.txnindex): aborted transactions, Kafka's 34-byte entries
    segment.py         LogSegment (.log + indexes), FileRegion (what a fetch sends)
    checkpoints.py     offset and leader-epoch checkpoint files, written atomically
    leader_epoch.py    LeaderEpochFileCache (leader-epoch-checkpoint)
    producer_state.py  ProducerStateManager: idempotent producer rules, open transactions, .snapshot files
    log.py             Log: one partition (append, end-transaction markers, read, LSO, aborted
                       transactions, truncate, flush, offsets)
    cleaner.py         compaction (and removal of aborted transactional data and old markers)
    log_loader.py      opening a Log; recovery after an unclean shutdown
    log_manager.py     LogManager: data dirs, lock, checkpoints, clean-shutdown marker
    log_config.py      LogConfig: the topic configs storage acts on
"""
