"""Benchmarks run by `scripts/bench*`. Not part of the `broker` package and never imported by it;
each benchmark measures Shoal against raw ceilings of the same stack measured in the same run.
"""
