"""Clients of the outside world's HTTP APIs that more than one service uses (IG Markets).

A service imports them as `services.clients.<module>`, like `services.base`; a module here may
import only `services.base`, `services.domain` and this package, never a service (a test checks
both directions, tests/unit/test_import_boundaries.py). A client used by one service only stays
next to that service (sentiment's MarketAux client).
"""
