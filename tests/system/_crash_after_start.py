"""Stands in for a service that starts, answers health, then dies shortly after (a crash loop)."""

import asyncio
import os

from services.base.base_service import BaseService, run_service


class CrashAfterStart(BaseService):
    name = os.environ.get("TRADING_SERVICE_NAME", "crasher")

    async def on_start(self) -> None:
        asyncio.get_running_loop().call_later(float(os.environ.get("CRASH_AFTER_S", "0.5")), os._exit, 3)


if __name__ == "__main__":
    run_service(CrashAfterStart)
