"""Throughput benchmarks: each module measures a stage against a baseline run in the same process."""
