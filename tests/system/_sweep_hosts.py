"""Two simulated hosts for the sweep's tests and benchmark: network namespaces joined by a veth pair."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"sweep-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"`ip netns` is unavailable: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


class TwoHosts:
    """Namespaces A (10.77.x.1) and B (10.77.x.2) joined by a veth pair; deleted at close."""

    def __init__(self) -> None:
        suffix = os.getpid() % 200 + 20
        self.names = (f"sweep-a-{os.getpid()}", f"sweep-b-{os.getpid()}")
        self.addresses = (f"10.77.{suffix}.1", f"10.77.{suffix}.2")
        veth = (f"swa{os.getpid() % 100000}", f"swb{os.getpid() % 100000}")
        self.commands = [["ip", "netns", "add", name] for name in self.names]
        self.commands += [
            ["ip", "link", "add", veth[0], "type", "veth", "peer", "name", veth[1]],
        ]
        for name, dev, address in zip(self.names, veth, self.addresses, strict=True):
            self.commands += [
                ["ip", "link", "set", dev, "netns", name],
                ["ip", "netns", "exec", name, "ip", "addr", "add", f"{address}/24", "dev", dev],
                ["ip", "netns", "exec", name, "ip", "link", "set", dev, "up"],
                # The replay suite's gateway binds 127.0.0.1: each host needs its loopback.
                ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            ]

    def open(self) -> TwoHosts:
        for command in self.commands:
            subprocess.run(command, check=True, capture_output=True)
        return self

    def close(self) -> None:
        for name in self.names:  # the veth pair goes with its namespaces
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)

    def run_in(self, host: int, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names[host], *args]

    @property
    def scheduler(self) -> str:
        return f"tcp://{self.addresses[0]}:8786"

    def cluster_commands(self) -> list[list[str]]:
        """A Dask scheduler on host A's veth address, and one single-thread worker on each host."""
        dask = str(Path(sys.executable).parent / "dask")
        commands = [
            self.run_in(
                0, [dask, "scheduler", "--host", self.addresses[0], "--port", "8786", "--no-dashboard"]
            )
        ]
        for host in (0, 1):
            worker = [dask, "worker", self.scheduler, "--nthreads", "1", "--no-dashboard"]
            commands.append(
                self.run_in(host, [*worker, "--host", self.addresses[host], "--name", f"host-{'ab'[host]}"])
            )
        return commands

    def worker_count(self) -> int:
        """How many workers the scheduler has, asked from host B (as the sweep will)."""
        code = (
            f"from distributed import Client; c = Client({self.scheduler!r}, timeout='10s');"
            " print(len(c.scheduler_info()['workers'])); c.close()"
        )
        done = subprocess.run(
            self.run_in(1, [sys.executable, "-c", code]), capture_output=True, text=True, check=False
        )
        return int(done.stdout.strip() or 0) if done.returncode == 0 else 0
