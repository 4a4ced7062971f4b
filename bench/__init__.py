"""Benchmarks: ``python -m bench.throughput`` and the Faust relay variants in :mod:`bench.faust_relay`."""
