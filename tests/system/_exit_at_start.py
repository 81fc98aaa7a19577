"""Stands in for a service that cannot start (bad configuration, missing file): exits 1 at once."""

import sys

print("cannot start: simulated start-up failure", file=sys.stderr)
sys.exit(1)
