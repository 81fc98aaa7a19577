"""The one IG epic mapping shared by paper-trading and market-data (services/clients/ig_epics.py)."""

import pytest

from services.clients.ig_epics import IG_EPICS_VARIABLE, default_epic, epic_overrides, epics_for


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {"CBA.AX": "AA.D.CBA.CASH.IP", "WBC.AX": "AA.D.WBC.CASH.IP"}),
        # an override replaces a default, and may add a symbol outside the list (the index)
        (
            {IG_EPICS_VARIABLE: " cba.ax = IX.D.CBA.X , ^axjo=IX.D.ASX.IFT.IP,"},
            {"CBA.AX": "IX.D.CBA.X", "WBC.AX": "AA.D.WBC.CASH.IP", "^AXJO": "IX.D.ASX.IFT.IP"},
        ),
    ],
)
def test_epics_for_the_symbols_with_the_overrides(environ, expected):
    assert epics_for(("CBA.AX", "WBC.AX"), epic_overrides(environ)) == expected


def test_a_malformed_override_names_the_variable():
    with pytest.raises(ValueError, match=r"^TRADING_PAPER_TRADING_IG_EPICS: 'CBA.AX' is not SYMBOL=EPIC$"):
        epic_overrides({IG_EPICS_VARIABLE: "CBA.AX"})


def test_default_epic():
    assert default_epic("nab.ax") == "AA.D.NAB.CASH.IP"
