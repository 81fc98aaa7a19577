"""The suite's import root: every module is `services.<package>.<module>`.

Three service folders carry a hyphen in their names (the contract's entry paths, e.g.
`services/market-data/market_data_service.py`), which Python cannot import. They are importable
under the underscore spelling: `services.market_data`, `services.ml_model`,
`services.paper_trading`. This is the one bootstrap of the import root; set-up installs the
repository into `.venv` (editable), so `services` is importable from anywhere with the venv's
python, including a service started by its file path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: importable name -> folder, for the folders whose names are not identifiers.
HYPHENATED = {"market_data": "market-data", "ml_model": "ml-model", "paper_trading": "paper-trading"}

_HERE = Path(__file__).resolve().parent


def _alias_folder(name: str, folder: str) -> None:
    qualified = f"{__name__}.{name}"
    if qualified in sys.modules:
        return
    init = _HERE / folder / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        qualified, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    globals()[name] = module


for _name, _folder in HYPHENATED.items():
    _alias_folder(_name, _folder)
