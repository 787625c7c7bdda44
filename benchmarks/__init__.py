"""Benchmarks of background_tasks: run ``make bench`` (see docs/benchmarks.md)."""
