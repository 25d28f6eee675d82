"""Benchmarks: programs that print figures (`python -m streams.dev.bench`, BENCHMARKS.md)."""
