"""The fuzz corpus and every crash input found so far, replayed through the fuzz targets.

Fast and without atheris: each file is one input to its target (tests/fuzz/targets.py), which
raises on anything but a documented outcome. A crash input stays here after its fix, so the bug
cannot come back unnoticed. Fuzzing itself is tests/fuzz/run_fuzz.py (see the README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS_DIR, CRASHES_DIR, TARGETS


def _inputs() -> list[tuple[str, Path]]:
    found = []
    for target in TARGETS:
        for base in (CORPUS_DIR, CRASHES_DIR):
            folder = base / target
            if folder.is_dir():
                found += [(target, f) for f in sorted(folder.iterdir()) if f.is_file()]
    return found


def test_every_target_has_a_corpus():
    for target in TARGETS:
        assert any((CORPUS_DIR / target).iterdir()), f"no corpus for {target}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_replay(target: str):
    # One test per target, not per file: a few hundred files replay in well under a second each.
    files = [f for t, f in _inputs() if t == target]
    for path in files:
        try:
            TARGETS[target](path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{path.relative_to(CORPUS_DIR.parent)}: {exc!r}") from exc
