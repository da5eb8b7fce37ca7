"""Latency quantiles from scraped histograms (bus.latency), as Prometheus's histogram_quantile."""

from __future__ import annotations

import math

import pytest

from bus.latency import LatencyWindow, histogram_buckets, quantile
from bus.metrics import Registry

NAME = "bus_worker_invocation_seconds"


def exposition(*durations: float, function: str = "fn") -> str:
    """What a replica serves after observing `durations`."""
    registry = Registry()
    histogram = registry.histogram(NAME, "Handler wall-clock time", ("function",), buckets=(0.01, 0.1, 1.0))
    for value in durations:
        histogram.observe(value, function=function)
    return registry.render()


def test_buckets_are_read_from_the_exposition_and_summed_over_series() -> None:
    text = exposition(0.005, 0.05) + exposition(0.5, function="other").split("\n", 2)[2]
    assert histogram_buckets(text, NAME) == ((0.01, 1.0), (0.1, 2.0), (1.0, 3.0), (math.inf, 3.0))


def test_other_metrics_and_garbage_lines_are_ignored() -> None:
    text = 'x_bucket{le="1"} 5\n' + NAME + '_bucket{le="oops"} 1\n' + NAME + '_bucket{function="a"} 2\n'
    assert histogram_buckets(text, NAME) == ()


def test_quantile_interpolates_within_its_bucket() -> None:
    """100 observations, 90 below 0.1 and 10 in (0.1, 1]: p99 is 0.1 + 0.9 * 9/10."""
    buckets = ((0.1, 90.0), (1.0, 100.0), (math.inf, 100.0))
    assert quantile(0.99, buckets) == pytest.approx(0.91)
    assert quantile(0.5, buckets) == pytest.approx(0.1 * 50 / 90)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert quantile(0.99, ((0.1, 1.0), (math.inf, 10.0))) == 0.1


def test_no_observations_have_no_quantile() -> None:
    assert quantile(0.99, ()) is None
    assert quantile(0.99, ((0.1, 0.0), (math.inf, 0.0))) is None


def test_the_window_counts_only_what_was_observed_in_it() -> None:
    """Slow calls 60 s ago leave the window; the p99 is of the recent fast ones."""
    window = LatencyWindow(seconds=30)
    window.add("fn-0", 0.0, histogram_buckets(exposition(*[0.5] * 100), NAME))
    window.add("fn-0", 60.0, histogram_buckets(exposition(*[0.5] * 100, *[0.005] * 100), NAME))
    assert window.quantile(0.99) == pytest.approx(0.01 * 0.99)


def test_replicas_add_up_and_a_restarted_one_starts_over() -> None:
    window = LatencyWindow(seconds=30)
    window.add("fn-0", 0.0, histogram_buckets(exposition(*[0.005] * 10), NAME))
    window.add("fn-1", 0.0, histogram_buckets(exposition(*[0.5] * 10), NAME))
    assert window.quantile(0.99) == pytest.approx(0.1 + 0.9 * (19.8 - 10) / 10)
    window.add("fn-1", 1.0, histogram_buckets(exposition(0.05), NAME))  # restarted: counts fell
    window.keep(["fn-1"])
    assert window.quantile(0.99) == pytest.approx(0.01 + 0.09 * 0.99)
