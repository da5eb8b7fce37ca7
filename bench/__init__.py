"""Benchmarks: raw Kafka client limits, the router and the platform's thin path, on one broker in one run.

`python -m bench [--quick] [--out FILE]` prints one JSON document: every figure with its unit,
the limit it is compared with and the ratio figure/limit.
"""

__all__: list[str] = []
