"""Loading user handlers from `module:callable` (workers.handlers)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bus.errors import HandlerLoadError
from workers.handlers import Context, load_handler, new_context

WriteModule = Callable[[str], str]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Write a throwaway module into tmp_path and return its unique name; imports are undone after."""
    monkeypatch.setattr(sys, "path", list(sys.path))

    def write(source: str) -> str:
        name = f"handler_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        return name

    yield write
    for name in [
        n for n, m in sys.modules.items() if str(getattr(m, "__file__", "")).startswith(str(tmp_path))
    ]:
        del sys.modules[name]


def test_sync_handler_loads(write_module: WriteModule, tmp_path: Path) -> None:
    """A plain `def handler(event, ctx)` loads and is the module's function."""
    name = write_module("def greet(event, ctx):\n    return {'hello': event}\n")
    handler = load_handler(f"{name}:greet", base_dir=str(tmp_path))
    assert handler("world", None) == {"hello": "world"}
    assert not inspect.iscoroutinefunction(handler)


def test_async_handler_loads(write_module: WriteModule, tmp_path: Path) -> None:
    """An `async def handler(event, ctx)` loads and stays a coroutine function."""
    name = write_module("async def greet(event, ctx):\n    return event\n")
    handler = load_handler(f"{name}:greet", base_dir=str(tmp_path))
    assert inspect.iscoroutinefunction(handler)


def test_base_dir_goes_on_sys_path(write_module: WriteModule, tmp_path: Path) -> None:
    """Handler modules are imported relative to base_dir (the manifest's folder)."""
    name = write_module("def greet(event, ctx):\n    return None\n")
    load_handler(f"{name}:greet", base_dir=str(tmp_path))
    assert str(tmp_path) in sys.path


@pytest.mark.parametrize(
    ("source", "attribute"),
    [
        (
            """
            class Handlers:
                @staticmethod
                def greet(event, ctx):
                    return event
            """,
            "Handlers.greet",
        ),
        (
            """
            class Greeter:
                def __call__(self, event, ctx):
                    return event
            greet = Greeter()
            """,
            "greet",
        ),
        ("def greet(event, ctx, retries=3):\n    return event\n", "greet"),
        ("def greet(*args):\n    return args[0]\n", "greet"),
        ("def greet(event, ctx, *, verbose=False):\n    return event\n", "greet"),
        ("greet = lambda event, ctx: event\n", "greet"),
    ],
    ids=["dotted-attribute", "callable-object", "extra-default", "varargs", "keyword-only-default", "lambda"],
)
def test_any_callable_taking_event_and_ctx_loads(
    write_module: WriteModule, tmp_path: Path, source: str, attribute: str
) -> None:
    """Whatever can be called as handler(event, ctx) loads, dotted attributes included."""
    name = write_module(source)
    assert load_handler(f"{name}:{attribute}", base_dir=str(tmp_path))("event", None) == "event"


@pytest.mark.parametrize("spec", ["no_colon", "module:", ":greet", ""])
def test_spec_must_be_module_colon_callable(spec: str, tmp_path: Path) -> None:
    """A spec without both a module and a callable is refused, saying the expected form."""
    with pytest.raises(HandlerLoadError, match="must be 'module:callable'"):
        load_handler(spec, base_dir=str(tmp_path))


def test_missing_module_is_reported(tmp_path: Path) -> None:
    """A module that cannot be found is reported with its name."""
    with pytest.raises(
        HandlerLoadError, match=r"cannot import 'no_such_module_[0-9a-f]+'.*ModuleNotFoundError"
    ):
        load_handler(f"no_such_module_{uuid.uuid4().hex}:greet", base_dir=str(tmp_path))


def test_module_that_fails_to_import_is_reported(write_module: WriteModule, tmp_path: Path) -> None:
    """An exception raised while importing the module is reported with the module name and the error."""
    name = write_module("raise RuntimeError('database not configured')\n")
    with pytest.raises(HandlerLoadError, match=rf"cannot import '{name}'.*database not configured"):
        load_handler(f"{name}:greet", base_dir=str(tmp_path))


def test_module_with_a_syntax_error_is_reported(write_module: WriteModule, tmp_path: Path) -> None:
    """A syntax error in the handler module is a HandlerLoadError, not a crash."""
    name = write_module("def greet(event, ctx)\n    return event\n")
    with pytest.raises(HandlerLoadError, match=rf"cannot import '{name}'.*SyntaxError"):
        load_handler(f"{name}:greet", base_dir=str(tmp_path))


@pytest.mark.parametrize("attribute", ["greet", "Handlers.missing", "Handlers.greet.deeper"])
def test_missing_attribute_is_reported(write_module: WriteModule, tmp_path: Path, attribute: str) -> None:
    """An attribute the module does not have is reported with the module and attribute names."""
    name = write_module("class Handlers:\n    greet = None\n")
    with pytest.raises(HandlerLoadError, match=rf"'{name}' has no attribute '{attribute}'"):
        load_handler(f"{name}:{attribute}", base_dir=str(tmp_path))


def test_attribute_that_is_not_callable_is_reported(write_module: WriteModule, tmp_path: Path) -> None:
    """An attribute that is not callable is refused."""
    name = write_module("greet = 42\n")
    with pytest.raises(HandlerLoadError, match=rf"'{name}:greet' is not callable"):
        load_handler(f"{name}:greet", base_dir=str(tmp_path))


@pytest.mark.parametrize(
    "signature",
    [
        "()",
        "(event)",
        "(event, ctx, extra)",
        "(event, ctx, *, required)",
        "(*, event, ctx)",
    ],
)
def test_handler_that_cannot_take_event_and_ctx_is_reported(
    write_module: WriteModule, tmp_path: Path, signature: str
) -> None:
    """A handler that cannot be called as handler(event, ctx) is refused at load time, not per event."""
    name = write_module(f"def greet{signature}:\n    return None\n")
    with pytest.raises(HandlerLoadError, match=r"must be callable as handler\(event, ctx\)"):
        load_handler(f"{name}:greet", base_dir=str(tmp_path))


def test_new_context_sets_every_field_of_context_as_its_constructor_does() -> None:
    """`new_context` fills `Context` by hand: a field added to `Context` and missed there fails here."""
    logger = logging.getLogger("bus.fn.thumbnail")
    args = ("thumbnail", 3, 12.5, "event-1", logger, "acme", "shop/eu")
    made = new_context(*args)
    expected = Context(
        function="thumbnail",
        attempt=3,
        deadline=12.5,
        idempotency_key="event-1",
        logger=logger,
        prefix="acme",
        cause_source="shop/eu",
    )
    for field in dataclasses.fields(Context):
        # A slot left unset raises AttributeError: the field was not copied.
        assert getattr(made, field.name) == getattr(expected, field.name), field.name
    assert made.emitted is not new_context(*args).emitted  # a list of its own per invocation


def test_inputs_of_two_sources_with_one_id_emit_events_of_different_ids() -> None:
    """source + id name an event (CloudEvents): emits of two such inputs must not collide."""
    logger = logging.getLogger("bus.fn.audit")
    ids = set()
    for source in ("shop-eu", "shop-us"):
        ctx = new_context("audit", 1, 12.5, "1", logger, "acme", source)
        ids.add(ctx.emit("audit.seen", {"from": source}))
    assert len(ids) == 2
    again = new_context("audit", 2, 12.5, "1", logger, "acme", "shop-eu")
    assert again.emit("audit.seen", {"from": "shop-eu"}) in ids  # a retry emits the same id
