"""sentiment service process.

Skeleton: answers the built-in methods (health, metrics, shutdown, list_methods) until its issue
fills in the domain API.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.base.base_service import BaseService, run_service  # noqa: E402


class SentimentService(BaseService):
    name = "sentiment"


if __name__ == "__main__":
    run_service(SentimentService)
