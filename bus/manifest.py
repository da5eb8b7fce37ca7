"""The `bus.yaml` manifest: parsed and validated into frozen dataclasses (pure but for `read`).

Every error is a ManifestError naming the manifest path, e.g. `functions.hello.timeout`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml

from bus import naming
from bus.durations import parse_duration
from bus.errors import ManifestError
from bus.flows import Flow, compile_flows, parse_flows
from bus.input_transform import InputTransform, compile_constant, compile_transformer
from bus.notifications import PROVIDERS
from bus.patterns import PatternError
from bus.patterns import compile as compile_pattern
from bus.routing import Rule, TagSelector
from bus.schedules import Schedule, parse_schedule

__all__ = [
    "Destinations",
    "Function",
    "HttpAuth",
    "HttpKey",
    "Manifest",
    "ObjectStore",
    "RetryPolicy",
    "Scaling",
    "parse",
    "parse_duration",
    "read",
    "read_document",
]

Ordering = Literal["none", "partition", "key"]
# As EventBridge's rule names; no commas, so the `matchedrules` extension can list them.
_RULE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}\Z")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Mi|Gi)$")
MIN_MEMORY_MIB = 64
"""Below this a Python process cannot even import a handler."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often a failed invocation is tried again, and after which delays."""

    attempts: int = 3
    """Total attempts including the first (Lambda's async default: 1 + 2 retries)."""
    backoff: tuple[float, ...] = (1.0, 10.0, 60.0)
    """Delay in seconds before retry n (the last value repeats)."""

    @property
    def levels(self) -> int:
        """Retry topics the policy needs: one per backoff step it uses (the last step repeats)."""
        return min(len(self.backoff), self.attempts - 1)

    def step(self, failed_attempt: int) -> tuple[int, float]:
        """(retry topic level, delay in seconds) after attempt `failed_attempt` (1-based) failed."""
        level = min(failed_attempt, len(self.backoff))
        return level, self.backoff[level - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scaling:
    """Lag-based autoscaling parameters of a worker group (SPEC §7, KEDA's names)."""

    min: int = 0
    """Fewest replicas; 0 allows scale to zero."""
    max: int = 4
    """Most replicas (also capped at the partition count)."""
    lag_threshold: int = 100
    """Target lag per replica, in events."""
    activation_lag_threshold: int = 0
    """Lag above which a group scaled to zero gets its first replica."""
    cooldown: float = 60.0
    """Seconds of zero lag before scaling to zero."""
    stabilization: float = 30.0
    """Seconds a scale-in looks back: replicas go down only to the highest recommendation of this
    window (the HPA's rule; its 300 s default is shortened as bus samples every 1-2 s)."""
    exclude_persistent_lag: bool = False
    """Leave out the lag of partitions stuck at one committed offset for `stabilization` seconds
    (KEDA's excludePersistentLag); a group with lag still keeps one replica."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Destinations:
    """Where results and errors go: a topic name, or None for nowhere."""

    on_success: str | None
    """Topic for `bus.function.result` events."""
    on_failure: str | None
    """Topic for `bus.function.error` events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Function:
    """One function: its handler and how its worker group runs it."""

    name: str
    handler: str
    """`module:callable`, imported with the manifest's folder (or `package`) on sys.path."""
    package: str | None = None
    """A folder (relative to the manifest) holding the handler's code and, optionally, a
    requirements.txt its own environment is built from (bus.packages); None: the manifest's folder."""
    partitions: int = 3
    """Partitions of the function topic."""
    ordering: Ordering = "partition"
    """none | partition | key."""
    concurrency: int = 1
    """Most in-flight invocations per replica."""
    timeout: float = 30.0
    """Seconds an invocation may run."""
    memory: int = 512
    """MiB of memory the function's handler process may use."""
    retry: RetryPolicy = RetryPolicy()
    destinations: Destinations
    scaling: Scaling = Scaling()


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStore:
    """A bucket source whose notifications arrive at `POST /notifications/{provider}`."""

    name: str
    provider: str
    """s3, minio or oss."""
    secret_env: str | None = None
    """Environment variable holding the webhook secret (comma-separated for rotation); None: unsigned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpKey:
    """An API key for `POST /events`: who it is and what it may send."""

    id: str
    secret_env: str
    """Environment variable holding the key."""
    tenant: str | None = None
    """Tenant (topic prefix) the key belongs to; None: the manifest's prefix."""
    sources: tuple[str, ...] = ()
    """Globs of allowed `source` values (`*` matches anything); empty: any."""
    types: tuple[str, ...] = ()
    """Globs of allowed `type` values; empty: any."""
    rate: float | None = None
    """Events per second allowed; None: unlimited."""
    burst: int | None = None
    """Events allowed at once (bucket size); None: one second's worth."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpAuth:
    """How `POST /events` authenticates: `sources.http` in the manifest."""

    mode: Literal["none", "api_keys", "jwt"] = "none"
    keys: tuple[HttpKey, ...] = ()
    jwt_secret_env: str | None = None
    """Environment variable holding the HS256 secret (mode jwt)."""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A validated manifest."""

    prefix: str = naming.DEFAULT_PREFIX
    functions: Mapping[str, Function] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    schemas: Mapping[str, str | Mapping[str, Any] | list[Any]] = field(default_factory=dict)
    """Event type -> path of its Avro schema, relative to `base_dir`, or the schema itself (as applied)."""
    schedules: tuple[Schedule, ...] = ()
    """Timers, validated (bus.schedules); names are unique."""
    sources: Mapping[str, Any] = field(default_factory=dict)
    object_stores: tuple[ObjectStore, ...] = ()
    """`sources.object_stores`, validated."""
    http_auth: HttpAuth = HttpAuth()
    """`sources.http`, validated."""
    """Source settings, kept as written until the gateway issue gives them a model."""
    base_dir: str = "."
    """Folder of the manifest file: handler modules are imported relative to it."""
    flows: tuple[Flow, ...] = ()
    """`flows:`, validated; their steps are among `rules` too (bus.flows)."""

    def secret_variables(self) -> tuple[str, ...]:
        """The environment variables the gateway reads secrets from for this manifest, each once:
        the object stores' and API keys' `secret_env`, the JWT secret's, else `BUS_API_KEYS` for
        `auth: api_keys` without listed keys."""
        auth = self.http_auth
        names = [store.secret_env for store in self.object_stores if store.secret_env is not None]
        names += [key.secret_env for key in auth.keys]
        if auth.mode == "api_keys" and not auth.keys:
            names.append("BUS_API_KEYS")
        if auth.mode == "jwt" and auth.jwt_secret_env is not None:
            names.append(auth.jwt_secret_env)
        return tuple(dict.fromkeys(names))


def read(path: str | Path, *, prefix: str | None = None) -> Manifest:
    """Read and validate a manifest file; `prefix` (from `--prefix` or `BUS_PREFIX`) overrides its own."""
    file = Path(path)
    return parse(read_document(file), base_dir=str(file.resolve().parent), prefix=prefix)


def read_document(path: str | Path) -> Any:
    """A manifest file's YAML as Python values (an empty file is an empty mapping), not yet validated."""
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(str(file), f"cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(str(file), "is not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(str(file), f"is not valid YAML: {_yaml_problem(exc)}") from exc
    return doc if doc is not None else {}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: the problem and where (its own text spans several, with a
    caret under an excerpt)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def parse(doc: Any, *, base_dir: str = ".", prefix: str | None = None) -> Manifest:
    """Validate a manifest document (the YAML as Python values); `prefix` overrides its own."""
    top = _mapping(doc, "manifest")
    _known_keys(top, "manifest", {"prefix", "functions", "rules", "schemas", "schedules", "sources", "flows"})
    if prefix is None:
        prefix = _name(top.get("prefix", naming.DEFAULT_PREFIX), "prefix")
    else:
        prefix = _name(prefix, "prefix")
    functions = {
        _name(name, f"functions.{name}"): _function(prefix, name, spec)
        for name, spec in _mapping(top.get("functions", {}), "functions").items()
    }
    rules = tuple(
        _rule(index, spec, functions) for index, spec in enumerate(_list(top.get("rules", []), "rules"))
    )
    flows = parse_flows(top.get("flows"), functions)
    seen: set[str] = set()
    for rule in (*rules, *compile_flows(flows)):
        if rule.name in seen:
            raise ManifestError(
                f"rules.{rule.name}", "rule names must be unique (flow steps use flow.<flow>.<step>)"
            )
        seen.add(rule.name)
    schemas = {
        str(k): v if isinstance(v, Mapping | list) else str(v)
        for k, v in _mapping(top.get("schemas", {}), "schemas").items()
    }
    schedules = _schedules(top.get("schedules", []))
    sources = _mapping(top.get("sources", {}), "sources")
    object_stores = _object_stores(sources.get("object_stores", []))
    http_auth = _http_auth(sources.get("http", {}))
    return Manifest(
        prefix=prefix,
        functions=functions,
        rules=(*rules, *compile_flows(flows)),
        flows=flows,
        schemas=schemas,
        schedules=schedules,
        sources=sources,
        object_stores=object_stores,
        http_auth=http_auth,
        base_dir=base_dir,
    )


def parse_memory(value: Any, path: str) -> int:
    """MiB from `512Mi`, `1Gi` (Kubernetes' units) or a plain number of MiB; at least 64."""
    mib: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        mib = value
    elif isinstance(value, str) and (match := _MEMORY.match(value.strip())):
        mib = float(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)
    if mib is None or mib < MIN_MEMORY_MIB:
        raise ManifestError(
            path, f"{value!r} is not a memory size of at least {MIN_MEMORY_MIB}Mi, e.g. 512Mi or 1Gi"
        )
    return int(mib)


def _function(prefix: str, name: str, spec: Any) -> Function:
    path = f"functions.{name}"
    body = _mapping(spec, path)
    _known_keys(
        body,
        path,
        {
            "handler",
            "partitions",
            "ordering",
            "concurrency",
            "timeout",
            "memory",
            "retry",
            "destinations",
            "scaling",
            "package",
        },
    )
    package = body.get("package")
    if package is not None and (not isinstance(package, str) or not package.strip()):
        raise ManifestError(
            f"{path}.package", "must be a folder path relative to bus.yaml, e.g. functions/parse"
        )
    handler = body.get("handler")
    if not isinstance(handler, str) or not all(handler.partition(":")[::2]):
        raise ManifestError(f"{path}.handler", "must be 'module:callable', e.g. handlers:greet")
    ordering = body.get("ordering", "partition")
    if ordering not in ("none", "partition", "key"):
        raise ManifestError(f"{path}.ordering", f"must be none, partition or key, got {ordering!r}")
    return Function(
        name=name,
        handler=handler,
        package=package,
        partitions=_int(body.get("partitions", 3), f"{path}.partitions", low=1),
        ordering=cast(Ordering, ordering),
        concurrency=_int(body.get("concurrency", 1), f"{path}.concurrency", low=1),
        timeout=parse_duration(body.get("timeout", "30s"), f"{path}.timeout"),
        memory=parse_memory(body.get("memory", "512Mi"), f"{path}.memory"),
        retry=_retry(body.get("retry", {}), f"{path}.retry"),
        destinations=_destinations(prefix, name, body.get("destinations", {}), f"{path}.destinations"),
        scaling=_scaling(body.get("scaling", {}), f"{path}.scaling"),
    )


def _retry(spec: Any, path: str) -> RetryPolicy:
    body = _mapping(spec, path)
    _known_keys(body, path, {"attempts", "backoff"})
    default = RetryPolicy()
    backoff = body.get("backoff")
    delays = (
        default.backoff
        if backoff is None
        else tuple(
            parse_duration(v, f"{path}.backoff[{i}]") for i, v in enumerate(_list(backoff, f"{path}.backoff"))
        )
    )
    if not delays:
        raise ManifestError(f"{path}.backoff", "must list at least one delay, e.g. [1s]")
    return RetryPolicy(
        attempts=_int(body.get("attempts", default.attempts), f"{path}.attempts", low=1),
        backoff=delays,
    )


def _scaling(spec: Any, path: str) -> Scaling:
    body = _mapping(spec, path)
    _known_keys(
        body,
        path,
        {
            "min",
            "max",
            "lag_threshold",
            "activation_lag_threshold",
            "cooldown",
            "stabilization",
            "exclude_persistent_lag",
        },
    )
    d = Scaling()
    exclude = body.get("exclude_persistent_lag", d.exclude_persistent_lag)
    if not isinstance(exclude, bool):
        raise ManifestError(f"{path}.exclude_persistent_lag", f"must be true or false, got {exclude!r}")
    scaling = Scaling(
        min=_int(body.get("min", d.min), f"{path}.min", low=0),
        max=_int(body.get("max", d.max), f"{path}.max", low=1),
        lag_threshold=_int(body.get("lag_threshold", d.lag_threshold), f"{path}.lag_threshold", low=1),
        activation_lag_threshold=_int(
            body.get("activation_lag_threshold", d.activation_lag_threshold),
            f"{path}.activation_lag_threshold",
            low=0,
        ),
        cooldown=parse_duration(body.get("cooldown", d.cooldown), f"{path}.cooldown"),
        stabilization=parse_duration(body.get("stabilization", d.stabilization), f"{path}.stabilization"),
        exclude_persistent_lag=exclude,
    )
    if scaling.min > scaling.max:
        raise ManifestError(f"{path}.min", f"min ({scaling.min}) must not exceed max ({scaling.max})")
    return scaling


def _destinations(prefix: str, function: str, spec: Any, path: str) -> Destinations:
    body = _mapping(spec, path)
    _known_keys(body, path, {"on_success", "on_failure"})
    defaults = {
        "on_success": naming.result_topic(prefix, function),
        "on_failure": naming.error_topic(prefix, function),
    }
    resolved: dict[str, str | None] = {}
    for key, default in defaults.items():
        value = body.get(key, "default")
        if value == "default":
            resolved[key] = default
        elif value is None or value == "none":
            resolved[key] = None
        elif (
            isinstance(value, str)
            and re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", value)
            and value not in (".", "..")  # Kafka refuses these two topic names
        ):
            resolved[key] = value
        else:
            raise ManifestError(f"{path}.{key}", "must be 'default', 'none' or a Kafka topic name")
    return Destinations(on_success=resolved["on_success"], on_failure=resolved["on_failure"])


def _schedules(spec: Any) -> tuple[Schedule, ...]:
    schedules: dict[str, Schedule] = {}
    for index, item in enumerate(_list(spec, "schedules")):
        schedule = parse_schedule(index, item, duration=parse_duration)
        if schedule.name in schedules:
            raise ManifestError(
                f"schedules[{index}].name",
                f"schedule {schedule.name!r} is declared twice; give each schedule its own name",
            )
        schedules[schedule.name] = schedule
    return tuple(schedules.values())


def _object_stores(spec: Any) -> tuple[ObjectStore, ...]:
    stores: dict[str, ObjectStore] = {}
    for index, item in enumerate(_list(spec, "sources.object_stores")):
        path = f"sources.object_stores[{index}]"
        body = _mapping(item, path)
        _known_keys(body, path, {"name", "provider", "secret_env"})
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{path}.name", "every object store needs a name")
        if name in stores:
            raise ManifestError(f"{path}.name", f"object store {name!r} is declared twice")
        provider = body.get("provider")
        if provider not in PROVIDERS:
            raise ManifestError(
                f"{path}.provider", f"must be one of {', '.join(PROVIDERS)}, got {provider!r}"
            )
        secret_env = body.get("secret_env")
        if secret_env is not None and not (isinstance(secret_env, str) and _ENV_NAME.match(secret_env)):
            raise ManifestError(
                f"{path}.secret_env",
                f"must name an environment variable like UPLOADS_SECRET, got {secret_env!r}",
            )
        stores[name] = ObjectStore(name=name, provider=provider, secret_env=secret_env)
    return tuple(stores.values())


def _http_auth(spec: Any) -> HttpAuth:
    body = _mapping(spec, "sources.http")
    _known_keys(body, "sources.http", {"auth", "keys", "jwt"})
    mode = body.get("auth", "none")
    if mode not in ("none", "api_keys", "jwt"):
        raise ManifestError("sources.http.auth", f"must be none, api_keys or jwt, got {mode!r}")
    keys = tuple(
        _http_key(i, item) for i, item in enumerate(_list(body.get("keys", []), "sources.http.keys"))
    )
    if len({key.id for key in keys}) != len(keys):
        raise ManifestError("sources.http.keys", "key ids must be unique")
    jwt = _mapping(body.get("jwt", {}), "sources.http.jwt")
    _known_keys(jwt, "sources.http.jwt", {"secret_env", "audience", "issuer"})
    if mode == "jwt":
        for name in ("secret_env", "audience"):
            if not isinstance(jwt.get(name), str) or not jwt[name]:
                raise ManifestError(f"sources.http.jwt.{name}", "auth: jwt needs it")
        _env_name(jwt["secret_env"], "sources.http.jwt.secret_env")
    issuer = jwt.get("issuer")
    return HttpAuth(
        mode=cast(Literal["none", "api_keys", "jwt"], mode),
        keys=keys,
        jwt_secret_env=jwt.get("secret_env"),
        jwt_audience=jwt.get("audience"),
        jwt_issuer=issuer if isinstance(issuer, str) else None,
    )


def _http_key(index: int, spec: Any) -> HttpKey:
    path = f"sources.http.keys[{index}]"
    body = _mapping(spec, path)
    _known_keys(body, path, {"id", "secret_env", "tenant", "sources", "types", "rate", "burst"})
    key_id = body.get("id")
    if not isinstance(key_id, str) or not key_id:
        raise ManifestError(f"{path}.id", "every key needs an id")
    globs = {
        name: tuple(str(g) for g in _list(body.get(name, []), f"{path}.{name}"))
        for name in ("sources", "types")
    }
    rate = body.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
        raise ManifestError(f"{path}.rate", f"must be a positive number of events per second, got {rate!r}")
    burst = body.get("burst")
    if burst is not None:
        burst = _int(burst, f"{path}.burst", low=1)
        if rate is None:
            raise ManifestError(f"{path}.burst", "a burst needs a rate")
    tenant = body.get("tenant")
    return HttpKey(
        id=key_id,
        secret_env=_env_name(body.get("secret_env"), f"{path}.secret_env"),
        tenant=_name(tenant, f"{path}.tenant") if tenant is not None else None,
        sources=globs["sources"],
        types=globs["types"],
        rate=float(rate) if rate is not None else None,
        burst=burst,
    )


def _env_name(value: Any, path: str) -> str:
    if not (isinstance(value, str) and _ENV_NAME.match(value)):
        raise ManifestError(path, f"must name an environment variable like SHOP_API_KEY, got {value!r}")
    return value


def _rule(index: int, spec: Any, functions: Mapping[str, Function]) -> Rule:
    body = _mapping(spec, f"rules[{index}]")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"rules[{index}].name", "every rule needs a name")
    if not _RULE_NAME.match(name):
        raise ManifestError(
            f"rules[{index}].name", f"{name!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    path = f"rules.{name}"
    _known_keys(body, path, {"name", "pattern", "tags", "targets"})
    try:
        pattern = compile_pattern(body.get("pattern", {}))
    except PatternError as exc:
        raise ManifestError(f"{path}.pattern", str(exc)) from exc
    items = _list(body.get("targets"), f"{path}.targets")
    if not items:
        raise ManifestError(f"{path}.targets", "list at least one function")
    targets: dict[str, str] = {}  # function -> manifest path of its entry
    transforms: dict[str, InputTransform] = {}
    for position, item in enumerate(items):
        where = f"{path}.targets[{position}]"
        # An entry is a function name, or {function, input_transformer | input} (EventBridge's target input).
        entry = item if isinstance(item, Mapping) else {"function": item}
        _known_keys(entry, where, {"function", "input_transformer", "input"})
        target = entry.get("function")
        name_path = f"{where}.function" if item is entry else where
        if not isinstance(target, str):
            raise ManifestError(
                name_path, f"a target is a function name or a mapping with `function: NAME`, got {target!r}"
            )
        if target not in functions:
            known = ", ".join(sorted(functions)) or "none declared"
            raise ManifestError(name_path, f"unknown function {target!r} (functions: {known})")
        if target in targets:
            raise ManifestError(
                where, f"function {target!r} is already a target at {targets[target]}; list each target once"
            )
        targets[target] = where
        if "input_transformer" in entry and "input" in entry:
            raise ManifestError(where, "give input_transformer or input, not both")
        if "input_transformer" in entry:
            transforms[target] = compile_transformer(entry["input_transformer"], f"{where}.input_transformer")
        elif "input" in entry:
            transforms[target] = compile_constant(entry["input"], f"{where}.input")
    tags = _mapping(body.get("tags", {}), f"{path}.tags")
    _known_keys(tags, f"{path}.tags", {"all", "any", "none"})
    selector = TagSelector(
        **{
            k: frozenset(_tag(t, f"{path}.tags.{k}[{n}]") for n, t in enumerate(_list(v, f"{path}.tags.{k}")))
            for k, v in tags.items()
        }
    )
    return Rule(
        name=name,
        pattern=pattern,
        targets=tuple(targets),
        tags=selector,
        transforms=MappingProxyType(transforms),
    )


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestError(path, f"must be a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError(path, f"must be a list, got {type(value).__name__}")
    return value


def _int(value: Any, path: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ManifestError(path, f"must be an integer >= {low}, got {value!r}")
    return value


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str):
        # YAML turns `prefix:` into None and `123:` into an int; str() would hide that.
        raise ManifestError(path, f"must be a string, got {value!r}")
    try:
        return naming.check_name(path.split(".", maxsplit=1)[0], value)
    except ValueError as exc:
        raise ManifestError(path, str(exc)) from exc


def _tag(value: Any, path: str) -> str:
    """One tag of a rule's selector: as an event's `tags` holds it (comma-separated, trimmed)."""
    if not isinstance(value, str):
        # YAML reads `on`, `no` and `2024` as a boolean and a number: str() would make a tag
        # ("True") that no event carries.
        raise ManifestError(path, f"must be a string, got {value!r}; quote it")
    if not value or value != value.strip() or "," in value:
        raise ManifestError(
            path,
            f"{value!r} can never equal a tag: an event's tags are split on commas and trimmed;"
            " give one non-empty tag per entry",
        )
    return value


def _known_keys(body: Mapping[str, Any], path: str, known: set[str]) -> None:
    for key in body:
        if key not in known:
            raise ManifestError(f"{path}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
