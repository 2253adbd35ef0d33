"""Helpers for tests, benchmarks and load tests (need the `dev` extra)."""
