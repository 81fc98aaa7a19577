"""Shared test set-up: make the repository and each service folder importable."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Service folders have hyphens (market-data), so they are not packages: their modules are
# imported by bare name, which is why module names stay unique across services.
for service_dir in sorted((REPO / "services").iterdir()):
    if service_dir.is_dir() and service_dir.name not in ("base", "domain", "__pycache__"):
        sys.path.insert(0, str(service_dir))
