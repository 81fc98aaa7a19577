#!/usr/bin/env python3
"""service_manager.py: start, stop and watch the trading suite (`--help` for the commands).

    python services/management/service_manager.py COMMAND [options]

The commands live in services/management/manager_cli.py, a module whose compiled code Python keeps;
this script stays small because a script is compiled from source each time it runs.
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["daemon"]:
        # Before any import of the suite's: the daemon's zygote starts first (daemon_boot.py).
        from services.management.daemon_boot import start_early

        start_early(sys.argv[2:])
    elif sys.argv[1:2] == ["start"]:
        # Before the command line's imports: the supervisor's preload runs while they do.
        from services.management.daemon_launch import start_early as launch_early

        launch_early(sys.argv[2:])

    from services.management.manager_cli import run

    run()
