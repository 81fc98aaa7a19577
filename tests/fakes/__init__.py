"""Fakes of outside-world libraries that a child process imports in place of the real one
(put `tests/fakes` first on PYTHONPATH)."""
