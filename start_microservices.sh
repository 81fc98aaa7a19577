#!/usr/bin/env bash
# Start the trading suite: set up whatever is missing, start the supervisor and every service,
# then print the status. `--foreground` keeps the supervisor in the foreground (systemd uses it).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

# Quick when already done: each step checks before it acts.
python3 setup_microservices.py --create-dirs --install-deps --init-db --models

PY=.venv/bin/python
[ -n "${VIRTUAL_ENV:-}" ] && PY=python

if [ "${1:-}" = "--foreground" ]; then
    shift
    exec "$PY" services/management/service_manager.py start --foreground "$@"
fi

code=0
"$PY" services/management/service_manager.py start "$@" || code=$?
cat <<TXT

Next:
  $PY services/management/service_manager.py dashboard     live view (q to quit)
  $PY services/management/service_manager.py status        services and restarts
  $PY services/management/service_manager.py logs -f       follow every service's log
  $PY services/management/service_manager.py stop          stop everything
TXT
exit "$code"
