"""Named crashpoints: a test makes a process die at an exact step of the money path.

    crashpoint("prediction.after_save")

does nothing unless TRADING_CRASHPOINT names that point; then the process ends at once with
exit status 86 (os._exit: no cleanup, no flush, as a power cut or SIGKILL would), so tests can
prove that what was committed before it survives and nothing is lost or doubled after it.
Read on every call (cheap: one environment lookup), so a test sets it per process.
"""

from __future__ import annotations

import os
import sys

CRASHPOINT_EXIT = 86


def crashpoint(name: str) -> None:
    if os.environ.get("TRADING_CRASHPOINT") == name:
        print(f"crashpoint {name}: exiting", file=sys.stderr, flush=True)
        os._exit(CRASHPOINT_EXIT)
