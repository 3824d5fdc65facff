"""The log on disk, in Kafka's layout. No network, no event loop: plain synchronous calls.

    fs.py              FileSystem: the one seam to the filesystem (RealFileSystem; a fake in tests)
    index.py           OffsetIndex (.index), TimeIndex (.timeindex)
    segment.py         LogSegment (.log + indexes), FileRegion (what a fetch sends)
    checkpoints.py     offset and leader-epoch checkpoint files, written atomically
    leader_epoch.py    LeaderEpochFileCache (leader-epoch-checkpoint)
    producer_state.py  ProducerStateManager: idempotent producer rules, .snapshot files
    log.py             Log: one partition (append, read, truncate, flush, offsets)
    log_loader.py      opening a Log; recovery after an unclean shutdown
    log_manager.py     LogManager: data dirs, lock, checkpoints, clean-shutdown marker
    log_config.py      LogConfig: the topic configs storage acts on
"""
