"""bus.metrics: counters and histograms in the Prometheus text exposition format 0.0.4."""

from __future__ import annotations

import math

import pytest

from bus.metrics import CONTENT_TYPE, Counter, Histogram, Registry


def test_a_small_registry_renders_exactly_the_exposition_format() -> None:
    """HELP and TYPE per metric, in registration order; series sorted; buckets cumulative to +Inf."""
    registry = Registry()
    requests = registry.counter("app_requests_total", "Requests answered.", ["route", "status"])
    seconds = registry.histogram("app_request_seconds", "Time to answer.", ["route"], buckets=[0.1, 1])
    up = registry.counter("app_starts_total", "Starts.")
    requests.inc(route="/b", status="200")
    requests.inc(2, route="/a", status="400")
    seconds.observe(0.05, route="/a")
    seconds.observe(0.5, route="/a")
    seconds.observe(3, route="/a")
    assert up.value() == 0
    assert registry.render() == (
        "# HELP app_requests_total Requests answered.\n"
        "# TYPE app_requests_total counter\n"
        'app_requests_total{route="/a",status="400"} 2\n'
        'app_requests_total{route="/b",status="200"} 1\n'
        "# HELP app_request_seconds Time to answer.\n"
        "# TYPE app_request_seconds histogram\n"
        'app_request_seconds_bucket{route="/a",le="0.1"} 1\n'
        'app_request_seconds_bucket{route="/a",le="1"} 2\n'
        'app_request_seconds_bucket{route="/a",le="+Inf"} 3\n'
        'app_request_seconds_sum{route="/a"} 3.55\n'
        'app_request_seconds_count{route="/a"} 3\n'
        "# HELP app_starts_total Starts.\n"
        "# TYPE app_starts_total counter\n"
        "app_starts_total 0\n"
    )


def test_content_type_is_the_text_format_0_0_4() -> None:
    """What a scraper expects in the Content-Type header of the text format."""
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_an_empty_registry_renders_nothing() -> None:
    """No metrics, no lines (not even a stray newline)."""
    assert Registry().render() == ""


def test_a_labelled_metric_without_series_renders_only_its_header() -> None:
    """A labelled metric has no sample until some label values are used."""
    registry = Registry()
    registry.counter("c_total", "C.", ["reason"])
    assert registry.render() == "# HELP c_total C.\n# TYPE c_total counter\n"


def test_label_values_escape_backslash_quote_and_newline() -> None:
    """Label values escape \\, " and newline; HELP escapes \\ and newline only."""
    registry = Registry()
    counter = registry.counter("c_total", 'Say "hi"\\ now\nplease.', ["path"])
    counter.inc(path='a\\b"c\nd')
    assert registry.render() == (
        '# HELP c_total Say "hi"\\\\ now\\nplease.\n'
        "# TYPE c_total counter\n"
        'c_total{path="a\\\\b\\"c\\nd"} 1\n'
    )


def test_unlabelled_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """A value equal to a bound falls in that bucket; each bucket counts everything at or below it."""
    histogram = Histogram("h", "H.", buckets=[1, 2, 5])
    for value in (0.5, 1, 2, 2, 4, 9):
        histogram.observe(value)
    assert histogram.render()[2:] == [
        'h_bucket{le="1"} 2',
        'h_bucket{le="2"} 4',
        'h_bucket{le="5"} 5',
        'h_bucket{le="+Inf"} 6',
        "h_sum 18.5",
        "h_count 6",
    ]


def test_observing_many_counts_as_observing_each() -> None:
    """observe_many puts each value in the same bucket observe would, and adds their sum."""
    one, many = Histogram("h", "H.", ["f"], buckets=[1, 2, 5]), Histogram("h", "H.", ["f"], buckets=[1, 2, 5])
    values = [0.5, 1, 2, 2, 4, 9, 0.0]
    for value in values:
        one.observe(value, f="x")
    many.observe_many(values, f="x")
    many.observe_many([], f="x")
    assert many.render() == one.render()
    with pytest.raises(ValueError, match="NaN"):
        many.observe_many([1.0, math.nan], f="x")


def test_an_unobserved_unlabelled_histogram_renders_zeros() -> None:
    """Like an unlabelled counter, it is exposed from the start, so rates work from the first scrape."""
    assert Histogram("h", "H.", buckets=[0.5]).render()[2:] == [
        'h_bucket{le="0.5"} 0',
        'h_bucket{le="+Inf"} 0',
        "h_sum 0",
        "h_count 0",
    ]


def test_an_explicit_inf_bucket_is_not_doubled() -> None:
    """+Inf given as the last bound is the implicit one."""
    assert Histogram("h", "H.", buckets=[1, math.inf]).buckets == (1.0, math.inf)


@pytest.mark.parametrize("buckets", [[], [2, 1], [1, 1], [math.nan], [1, math.inf, 2]])
def test_histogram_buckets_must_be_finite_and_increasing(buckets: list[float]) -> None:
    """Empty, unsorted, repeated or non-finite bounds are refused when the histogram is made."""
    with pytest.raises(ValueError, match="buckets"):
        Histogram("h", "H.", buckets=buckets)


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é"])
def test_metric_names_are_validated(name: str) -> None:
    """Metric names match [a-zA-Z_:][a-zA-Z0-9_:]*."""
    with pytest.raises(ValueError, match="metric name"):
        Counter(name, "X.")


def test_valid_metric_names_are_accepted() -> None:
    """Colons and underscores are allowed, including first."""
    assert Counter("_a:b_c:", "X.").name == "_a:b_c:"


@pytest.mark.parametrize("label", ["", "1a", "a-b", "a:b", "__reserved"])
def test_label_names_are_validated(label: str) -> None:
    """Label names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with the reserved '__'."""
    with pytest.raises(ValueError, match="label name"):
        Counter("c", "X.", [label])


def test_repeated_label_names_are_refused() -> None:
    """A label name declared twice is a mistake."""
    with pytest.raises(ValueError, match="repeat"):
        Counter("c", "X.", ["a", "a"])


def test_a_histogram_cannot_declare_le() -> None:
    """`le` is the bucket label of a histogram."""
    with pytest.raises(ValueError, match="'le'"):
        Histogram("h", "H.", ["le"])


def test_updates_must_give_exactly_the_declared_labels() -> None:
    """Missing, extra or non-string label values are refused, never rendered."""
    counter = Counter("c", "X.", ["route"])
    histogram = Histogram("h", "H.", ["route"])
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc()
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(route="/a", status="200")
    with pytest.raises(ValueError, match="takes labels"):
        histogram.observe(1.0, path="/a")
    with pytest.raises(TypeError, match="must be a string"):
        counter.inc(route=1)  # type: ignore[arg-type]
    assert counter.render()[2:] == []


def test_counters_only_go_up() -> None:
    """A negative or NaN increment is refused; zero is allowed and creates the series."""
    counter = Counter("c", "X.", ["k"])
    for amount in (-1, math.nan):
        with pytest.raises(ValueError, match="only increase"):
            counter.inc(amount, k="a")
    counter.inc(0, k="a")
    counter.inc(0.5, k="a")
    assert counter.value(k="a") == 0.5
    assert counter.render()[2:] == ['c{k="a"} 0.5']


def test_a_histogram_refuses_nan() -> None:
    """NaN fits no bucket and would poison the sum."""
    with pytest.raises(ValueError, match="NaN"):
        Histogram("h", "H.").observe(math.nan)


def test_a_name_is_registered_once() -> None:
    """Two metrics with one name would render an invalid exposition."""
    registry = Registry()
    registry.counter("c_total", "X.")
    with pytest.raises(ValueError, match="registered already"):
        registry.histogram("c_total", "Y.")


def test_a_gauge_goes_up_and_down_per_label_values() -> None:
    """A gauge holds the last value set for each combination of label values."""
    registry = Registry()
    gauge = registry.gauge("bus_replicas", "Replicas.", ["function"])
    gauge.set(3, function="a")
    gauge.set(1, function="a")
    gauge.set(2, function="b")
    assert gauge.value(function="a") == 1
    assert registry.render().splitlines() == [
        "# HELP bus_replicas Replicas.",
        "# TYPE bus_replicas gauge",
        'bus_replicas{function="a"} 1',
        'bus_replicas{function="b"} 2',
    ]
