"""TRADING_MANAGER_KSM: the zygote offers its memory to the kernel's same-page merging when asked
(its mappings then carry VmFlags `mg`, and so do the services forked from it), and leaves it alone
when not. The test never changes /sys/kernel/mm/ksm/run (`on` marks whatever ksmd's state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import rpc_call_sync, wait_until
from tests.system.test_manager import FAST_TIMERS, by_name

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/sys/kernel/mm/ksm/run").exists(), reason="this kernel has no KSM (CONFIG_KSM)"
    ),
]


def mergeable_mappings(pid: int) -> dict[str, bool]:
    """Each mapping of `pid` (by its name, the anonymous ones by their address) -> marked `mg`."""
    marked: dict[str, bool] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            name = head[5] if len(head) > 5 else head[0]
        elif line.startswith("VmFlags:"):
            marked[name] = marked.get(name, False) or " mg" in line
    return marked


@pytest.mark.parametrize("ksm", ["on", "off"])
def test_the_zygote_marks_its_memory_mergeable_only_when_asked(processes, ksm):
    dirs = processes.start_suite(
        processes.suite_dirs("zk-", **FAST_TIMERS, TRADING_MANAGER_KSM=ksm), "sentiment"
    )
    status = rpc_call_sync(dirs.socket("manager"), "status")
    zygote = status["supervisor"]["zygote"][0]
    service = wait_until(lambda: by_name(dirs)["sentiment"]["pid"], 30, what="sentiment's pid")
    for pid in (zygote, service):  # the service inherits the marks from the zygote
        mappings = mergeable_mappings(pid)
        assert "[heap]" in mappings
        if ksm == "on":
            assert mappings["[heap]"], f"{pid}: its heap is not marked mergeable"
            assert sum(mappings.values()) > 10  # the heap, obmalloc's arenas, the libraries' data
            assert "ksm_mergeable: yes" in Path(f"/proc/{pid}/ksm_stat").read_text()
        else:
            assert not any(mappings.values()), f"{pid}: marked although TRADING_MANAGER_KSM=off"
    log = (
        (dirs.log_dir / "zygote.stdout.log").read_text()
        if (dirs.log_dir / "zygote.stdout.log").exists()
        else ""
    )
    assert "KSM not used" not in log
