"""How much a bench run measures: event counts, sample counts and deadlines (pure)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "QUICK", "Sizes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """The size of every measurement of one run."""

    events: int
    """Events per raw produce and consume→produce measurement."""
    consume_events: int
    """Events per plain consume measurement (consumers are several times faster than producers)."""
    latency_samples: int
    """Records sent one at a time per raw latency measurement."""
    thin_events: int
    """Events sent through the gateway one per request."""
    thin_batch: int
    """Events per request of the batched thin-path run; 0 skips that run."""
    thin_batched_events: int
    """Events sent through the gateway in batched requests."""
    gateway_events: int
    """Events sent one per request to the gateway alone (and to its Kafka-less baseline)."""
    concurrency: int = 32
    """Most HTTP requests in flight at once."""
    partitions: int = 6
    """Partitions of every throughput topic (the ingress topic has 6)."""
    batch: int = 500
    """Most records a consume loop takes at once (the router's and worker's batch)."""
    value_bytes: int = 200
    """Size of every raw record value, in bytes."""
    deadline: float
    """Seconds after which any one raw measurement stops and reports what it reached."""
    txn_warm_up: float
    """Seconds of transactions before the transactional measurement: a fresh broker's transaction
    path runs several times slower for its first minute (JIT), which is not what a router sees."""
    thin_deadline: float
    """Seconds after which a thin-path run stops sending and stops waiting for results."""
    router_events: int
    """Input events of the router's raw-loop limit, and the most of any other router measurement."""
    router_seconds: float
    """Seconds of routing each router measurement is sized for, from the transform's measured speed."""
    router_match_seconds: float
    """Seconds each Kafka-less timing of the Router transform or of rule matching may take."""
    router_txn_warm_up: float
    """Seconds of transactions before the router's when the transactional group did not run first
    (0: none, as in `--quick`, whose transactional figures are then a cold broker's)."""
    worker_events: int
    """Events of each no-op worker measurement (its raw-loop limit copies `events`)."""
    worker_key_events: int
    """Events of the 20 ms handler in key mode (64 in flight: about 3,000/s at most)."""
    worker_partition_events: int
    """Events of the 20 ms handler in partition mode (2 partitions, one in flight each: 100/s at most)."""
    worker_latency_samples: int
    """Events sent to a worker one at a time, each after a raw round trip of the same record."""
    worker_txn_warm_up: float
    """Seconds of transactions before the worker's when neither the transactional nor the router
    group ran first (0: none)."""
    autoscale_backlog: int
    """Events of 10 ms each that each autoscaling drain run works off (4 replicas: ~350/s)."""
    autoscale_drains: int
    """Drain runs, autoscaled and pinned each."""
    autoscale_zero_samples: int
    """First events timed from zero replicas (and as many with a replica started directly)."""
    package_samples: int
    """Handler host cold starts per kind (plain, cached and uncached environment)."""


FULL = Sizes(
    events=300_000,
    consume_events=1_000_000,
    latency_samples=2_000,
    thin_events=6_000,
    thin_batch=50,
    thin_batched_events=60_000,
    gateway_events=20_000,
    deadline=30.0,
    txn_warm_up=60.0,
    thin_deadline=40.0,
    router_events=200_000,
    router_seconds=6.0,
    router_match_seconds=3.0,
    router_txn_warm_up=20.0,
    worker_events=20_000,
    worker_key_events=3_000,
    worker_partition_events=300,
    worker_latency_samples=200,
    worker_txn_warm_up=20.0,
    autoscale_backlog=3_600,
    autoscale_drains=2,
    autoscale_zero_samples=5,
    package_samples=5,
)
"""The default run: about three minutes on two cores."""

QUICK = Sizes(
    events=50_000,
    consume_events=100_000,
    latency_samples=200,
    thin_events=1_000,
    thin_batch=50,
    thin_batched_events=10_000,
    gateway_events=3_000,
    deadline=10.0,
    txn_warm_up=5.0,
    thin_deadline=15.0,
    router_events=20_000,
    router_seconds=1.5,
    router_match_seconds=0.5,
    router_txn_warm_up=0.0,
    worker_events=3_000,
    worker_key_events=600,
    worker_partition_events=100,
    worker_latency_samples=50,
    worker_txn_warm_up=0.0,
    autoscale_backlog=1_200,
    autoscale_drains=1,
    autoscale_zero_samples=3,
    package_samples=2,
)
"""`--quick`: about one minute, for a smoke check rather than figures to quote."""
