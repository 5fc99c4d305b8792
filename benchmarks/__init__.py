"""Benchmarks: scripts that measure PLADA (``python -m benchmarks.<name>``), importable for ``plada bench`` and
the tests. Results they publish live under ``benchmarks/results``."""
