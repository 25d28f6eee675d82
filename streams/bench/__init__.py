"""Benchmarks: programs that print figures (`python -m streams.bench`, BENCHMARKS.md)."""
