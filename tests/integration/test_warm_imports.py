"""After start-up, a background thread imports what a client's first requests need.

Start-up leaves the handlers and the group coordinator out (DESIGN, principle 6); the broker
imports them right after it is ready, so the first consumer of a fresh broker does not wait for
them on the event loop. Checked in a fresh interpreter, where nothing else imported them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from odradek.broker.server import WARM_MODULES

SCRIPT = """
import sys, time
from odradek.broker.embedded import Broker
from odradek.broker.server import WARM_MODULES
b = Broker().start_in_thread()
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not all(m in sys.modules for m in WARM_MODULES):
    time.sleep(0.02)
print(sorted(m for m in WARM_MODULES if m not in sys.modules))
b.stop_thread()
"""


def test_every_module_to_warm_exists():
    assert [name for name in WARM_MODULES if importlib.util.find_spec(name) is None] == []


def test_a_started_broker_imports_them_without_a_request():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
