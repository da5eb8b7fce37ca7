"""bus.patterns agrees with a plain recursive reference matcher on generated patterns and events."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.patterns import compile

NAMES = ["a", "b", "c"]
OR_NAMES = ["x", "y"]
STRINGS = st.sampled_from(["", "a", "ab", "b", "A", "ba", "Ab"])
NUMBERS = st.sampled_from([0, 1, 1.0, 2.5, -1, 3, 10])
SCALARS = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())
MISSING = object()


# --- the reference: the documented semantics, written plainly ----------------------------------


def is_number(value: Any) -> bool:
    """True for JSON numbers, which booleans are not."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def equal(wanted: Any, value: Any) -> bool:
    """Pattern equality: numbers by value, otherwise same type and value."""
    if is_number(wanted) and is_number(value):
        return bool(wanted == value)
    return type(wanted) is type(value) and wanted == value


def numeric(spec: list[Any], value: Any) -> bool:
    """True when the number satisfies every comparison of the numeric spec."""
    if not is_number(value):
        return False
    tests = {
        "=": lambda b: value == b,
        "<": lambda b: value < b,
        "<=": lambda b: value <= b,
        ">": lambda b: value > b,
        ">=": lambda b: value >= b,
    }
    return all(tests[spec[i]](spec[i + 1]) for i in range(0, len(spec), 2))


def value_matches(item: Any, value: Any) -> bool:  # noqa: PLR0911 - one return per operator, like the docs
    """One pattern array item against one scalar event value."""
    if not isinstance(item, dict):
        return equal(item, value)
    ((op, arg),) = item.items()
    if op == "exists":
        return bool(arg)
    if op == "numeric":
        return numeric(arg, value)
    if op == "anything-but":
        if isinstance(arg, dict):
            ((inner_op, inner),) = arg.items()
            inner_args = inner if isinstance(inner, list) else [inner]
            return not any(value_matches({inner_op: a}, value) for a in inner_args)
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(equal(e, value) for e in excluded)
    if not isinstance(value, str):
        return False
    if op == "prefix":
        return value.startswith(arg)
    if op == "suffix":
        return value.endswith(str(arg))
    assert op == "equals-ignore-case"
    return value.lower() == str(arg).lower()


def leaves(value: Any) -> list[Any]:
    """Scalar values at a field, arrays flattened, objects left out."""
    if value is MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def objects(value: Any) -> list[dict[str, Any]]:
    """Objects at a field, arrays flattened."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [found for item in value for found in objects(item)]
    return []


def needs_presence(pattern: dict[str, Any]) -> bool:
    """True when some field of the pattern cannot be satisfied by absence."""
    for spec in pattern.values():
        if isinstance(spec, dict):
            if needs_presence(spec):
                return True
        elif {"exists": False} not in spec:
            return True
    return False


def reference(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """Every field matches; `$or` (top level only here) needs one branch to match."""
    for name, spec in pattern.items():
        if name == "$or":
            if not any(reference(branch, event) for branch in spec):
                return False
            continue
        value = event.get(name, MISSING)
        if isinstance(spec, dict):
            found = objects(value) or [{}]
            each = [reference(spec, obj) for obj in found]
            if not (any(each) if needs_presence(spec) else all(each)):
                return False
        else:
            values = leaves(value)
            if not values:
                if {"exists": False} not in spec:
                    return False
            elif not any(value_matches(item, v) for item in spec for v in values):
                return False
    return True


# --- generators --------------------------------------------------------------------------------


def numeric_specs() -> st.SearchStrategy[list[Any]]:
    """One comparison or a lower-then-upper range."""
    single = st.tuples(st.sampled_from(["=", "<", "<=", ">", ">="]), NUMBERS).map(list)
    ranged = st.tuples(st.sampled_from([">", ">="]), NUMBERS, st.sampled_from(["<", "<="]), NUMBERS).filter(
        lambda r: r[1] < r[3]
    )
    return st.one_of(single, ranged.map(list))


AFFIXES = STRINGS.filter(bool)
"""anything-but's prefix and suffix: never empty (event-ruler refuses an empty one)."""

ITEMS: st.SearchStrategy[Any] = st.one_of(
    SCALARS,
    STRINGS.map(lambda s: {"prefix": s}),
    STRINGS.map(lambda s: {"suffix": s}),
    STRINGS.map(lambda s: {"equals-ignore-case": s}),
    st.one_of(
        STRINGS,
        NUMBERS,
        st.lists(STRINGS, min_size=1, max_size=3),
        st.lists(NUMBERS, min_size=1, max_size=3),
        AFFIXES.map(lambda s: {"prefix": s}),
        AFFIXES.map(lambda s: {"suffix": s}),
        st.lists(AFFIXES, min_size=1, max_size=3).map(lambda s: {"prefix": s}),
        st.lists(AFFIXES, min_size=1, max_size=3).map(lambda s: {"suffix": s}),
    ).map(lambda a: {"anything-but": a}),
    numeric_specs().map(lambda n: {"numeric": n}),
    st.booleans().map(lambda b: {"exists": b}),
)


def patterns(names: list[str], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Pattern objects over `names`, nesting objects up to `depth`."""
    spec: st.SearchStrategy[Any] = st.lists(ITEMS, min_size=1, max_size=4)
    if depth > 0:
        spec = st.one_of(spec, patterns(NAMES, depth - 1))
    return st.dictionaries(st.sampled_from(names), spec, min_size=1, max_size=2)


@st.composite
def top_patterns(draw: st.DrawFn) -> dict[str, Any]:
    """A pattern, sometimes empty, sometimes with a top-level $or over fields of its own."""
    pattern: dict[str, Any] = draw(st.one_of(st.just({}), patterns(NAMES, 2)))
    if draw(st.booleans()):
        pattern["$or"] = draw(st.lists(patterns(OR_NAMES, 1), min_size=2, max_size=3))
    return pattern


def values(depth: int) -> st.SearchStrategy[Any]:
    """Event values: scalars, arrays (nested too) and objects."""
    if depth == 0:
        return SCALARS
    inner = values(depth - 1)
    return st.one_of(SCALARS, st.lists(inner, max_size=3), events(depth - 1))


def events(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Event objects over every name the patterns use."""
    return st.dictionaries(st.sampled_from(NAMES + OR_NAMES), values(depth), min_size=2, max_size=5)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pattern=top_patterns(), event=events(3))
def test_compiled_patterns_agree_with_the_reference(pattern: dict[str, Any], event: dict[str, Any]) -> None:
    """For generated patterns and events, Pattern.matches equals the reference matcher."""
    assert compile(pattern).matches(event) is reference(pattern, event)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pattern=top_patterns(), event=events(3))
def test_explain_is_none_exactly_when_the_event_matches(
    pattern: dict[str, Any], event: dict[str, Any]
) -> None:
    """explain() returns None for matching events and a message naming a field otherwise."""
    compiled = compile(pattern)
    explained = compiled.explain(event)
    assert (explained is None) is compiled.matches(event)


EXISTS_ONLY = st.dictionaries(
    st.sampled_from(NAMES), st.booleans().map(lambda b: [{"exists": b}]), min_size=1, max_size=2
)
ELEMENTS = st.lists(st.dictionaries(st.sampled_from(NAMES), SCALARS, max_size=2), max_size=3)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(inner=EXISTS_ONLY, elements=ELEMENTS)
def test_exists_over_arrays_of_objects_agrees_with_the_reference(
    inner: dict[str, Any], elements: list[dict[str, Any]]
) -> None:
    """exists true/false inside an object pattern over an array of objects follows the reference."""
    pattern = {"a": inner}
    event = {"a": elements}
    assert compile(pattern).matches(event) is reference(pattern, event)


# --- numeric bounds: floats decide where they can, the written decimals where they must -------

BOUNDS = st.one_of(
    st.integers(-5_000_000_000, 5_000_000_000),
    st.decimals(-5_000_000_000, 5_000_000_000, places=6).map(float),
    st.sampled_from([0.1, 0.3, 1e-6, 4_999_999_999.999999, -2.675, 1.000001]),
)


def _near(bound: float) -> st.SearchStrategy[Any]:
    """Numbers at, just around, and anywhere near a bound (floats one step apart, ints)."""
    return st.one_of(
        st.just(bound),
        st.just(math.nextafter(bound, math.inf)),
        st.just(math.nextafter(bound, -math.inf)),
        st.just(int(bound)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-6_000_000_000, 6_000_000_000),
    )


@settings(max_examples=500, deadline=None)
@given(
    data=st.data(),
    low=BOUNDS,
    high=BOUNDS,
    lower=st.sampled_from([">", ">="]),
    upper=st.sampled_from(["<", "<="]),
)
def test_numeric_decides_as_the_written_decimals_do(
    data: st.DataObject, low: float, high: float, lower: str, upper: str
) -> None:
    """A numeric range accepts exactly the numbers whose JSON text lies in it, compared as decimals."""
    low, high = min(low, high), max(low, high)
    spec: list[Any] = [lower, low, upper, high] if low != high else ["=", low]
    value = data.draw(st.one_of(_near(low), _near(high)))
    pattern = compile({"x": [{"numeric": spec}]})

    def written(number: float) -> Decimal:
        return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)

    expected = math.isfinite(value) and abs(value) <= 5_000_000_000
    if expected:
        number, below, above = written(value), written(low), written(high)
        if spec[0] == "=":
            expected = number == below
        else:
            expected = (number > below or (lower == ">=" and number == below)) and (
                number < above or (upper == "<=" and number == above)
            )
    assert pattern.matches({"x": value}) is expected
