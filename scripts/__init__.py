"""Benchmark and check scripts: run from the repository root as ``python -m scripts.NAME`` (or
through the Makefile's targets). Not installed: they measure the packages, they are not part of
them, and they import them only through their public modules."""
