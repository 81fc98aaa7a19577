"""One worker thread per process for CPU work a service does off its event loop (run_cpu)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_cpu_lane: ThreadPoolExecutor | None = None
_cpu_lane_made = threading.Lock()


async def run_cpu(fn: Callable, *args):
    """`fn(*args)` on the process's one worker thread for pure-Python CPU work (market-data's CSV
    files and synthetic walks, ml-model's checks of its model files at start), off the event loop
    so that health checks stay prompt.

    One thread, not asyncio.to_thread's pool: under the GIL more threads add no speed, and each new
    one cost the loop a blocking `Thread.start()` while its siblings held the GIL (~20 ms apiece
    when the first refresh after a start priced five symbols at once: market-data was healthy
    ~0.1 s later than its peers). Network-bound work (yfinance) keeps asyncio.to_thread's pool.
    Made on first use, so a zygote that imports this module holds no thread.
    """
    global _cpu_lane
    if _cpu_lane is None:
        with _cpu_lane_made:
            if _cpu_lane is None:
                _cpu_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu-lane")
                # The loop takes the GIL back after every system call (a socket read, a write):
                # against a thread that computes, each time after up to the switch interval (5 ms
                # by default): a restart in a session, the first walks beside it, answered its
                # health in 60 ms rather than 23. At 1 ms the loop waits less; the lane is switched
                # out only when the loop asks.
                sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
    call = functools.partial(contextvars.copy_context().run, fn, *args)  # as asyncio.to_thread
    return await asyncio.get_running_loop().run_in_executor(_cpu_lane, call)
