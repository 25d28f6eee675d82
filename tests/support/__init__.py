"""Helpers that unit and integration tests share (builders, workloads, oracles, checks)."""
