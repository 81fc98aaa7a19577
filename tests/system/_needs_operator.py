"""Stands in for a service that finds its ledger damaged: says so, then exits 78
(EXIT_NEEDS_OPERATOR), at once or, with NEEDS_OPERATOR_AFTER_S, after serving that long."""

import asyncio
import os
import sys

from services.base import EXIT_NEEDS_OPERATOR
from services.base.base_service import BaseService, run_service


def refuse() -> None:
    print("ledger damaged: simulated, a person must look", file=sys.stderr, flush=True)
    os._exit(EXIT_NEEDS_OPERATOR)


class NeedsOperator(BaseService):
    name = os.environ.get("TRADING_SERVICE_NAME", "needs-operator")

    async def on_start(self) -> None:
        asyncio.get_running_loop().call_later(float(os.environ["NEEDS_OPERATOR_AFTER_S"]), refuse)


if __name__ == "__main__":
    if "NEEDS_OPERATOR_AFTER_S" not in os.environ:
        refuse()
    run_service(NeedsOperator)
