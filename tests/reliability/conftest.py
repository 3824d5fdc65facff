"""Reliability tests: slow-marked runs are skipped unless asked for with `-m slow`."""

from __future__ import annotations

import pathlib

import pytest

HERE = pathlib.Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords and HERE in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(skip)
