"""`python -m odradek ...` is the `odradek` command."""

import sys

from odradek.cli import main

sys.exit(main())
