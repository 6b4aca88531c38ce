"""Moved to `harness.experiments.overlap` (S4.7); this name stays only for the old claims
fixtures until they are replaced."""

from harness.experiments.overlap import PAIRS, overlap_measurements  # noqa: F401
