"""Credentials for `POST /events`: API keys, HS256 JWTs, and the scope check (pure: time is passed in).

Who may publish is a `Principal`: a key id, a tenant, the `source` and `type` globs it may publish
(empty = any) and its rate limit. Two ways to present one, both answered 401 (`AuthError`) when wrong:

- API key: `authorization: Bearer <key>` or `x-api-key: <key>` (not both). `ApiKeys` keeps only the
  SHA-256 of each configured key and compares the presented key's digest with every one of them in
  constant time. Revoking a key means leaving it out of the configured set (and rebuilding `ApiKeys`);
  there is no revocation list. Rotation: give the old and the new key the same principal.
- JWT: `authorization: Bearer <token>`, HS256 only, with `exp` and `aud` required; the claims `sub`,
  `tenant`, `sources`, `types` (and optionally `rate`, `burst`) become the principal.

`authorize` then answers 403 (`ForbiddenError`, naming `source` or `type`) for an event outside the
principal's globs, and for an event in the platform's own namespace (`PLATFORM_NAMES`: types
`bus.*`, sources `bus://*`) unless a glob of the principal names that namespace explicitly; with
authentication off, such an event is always refused. Platform events (objects, timers, function
results and errors) come from bus itself: nobody else may pass for it, as EventBridge refuses
`aws.*` sources in PutEvents. A glob is case-sensitive; `*` matches any run of characters, `/`
included, and is the only special character (`?` and `[` match themselves), so `app://shop/*`
covers `app://shop/orders/eu`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bus.errors import AuthError, ConfigError, ForbiddenError, InvalidEvent
from bus.events import parse_json

__all__ = [
    "PLATFORM_NAMES",
    "ApiKeys",
    "AuthError",
    "FailClosed",
    "ForbiddenError",
    "JwtVerifier",
    "Principal",
    "authorize",
    "principal_from_claims",
]

MAX_CREDENTIAL = 8192
"""Longest key or token accepted, in characters; bounds the work an unauthenticated request causes."""
MIN_KEY = 16
"""Shortest API key configurable, in characters (use `secrets.token_urlsafe(32)`)."""
MIN_JWT_SECRET = 32
"""Shortest HS256 secret, in bytes: RFC 7518 §3.2 asks for a key at least as long as the hash."""

PLATFORM_NAMES = (("type", "bus."), ("source", "bus://"))
"""The platform's namespace per event attribute: what only bus itself publishes, or a principal
with a glob starting so (an integration that relays platform events, granted on purpose)."""

# RFC 6750 b64token: what a bearer credential may hold, so it travels in a header unchanged.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,19}")
_FIX_KEY = "send 'authorization: Bearer <key>' or 'x-api-key: <key>' with a key issued to you"
_FIX_JWT = "send 'authorization: Bearer <token>' with a signed JWT"
_REISSUE = "ask the token issuer for a new HS256 token for this gateway"


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a credential belongs to and what it may publish."""

    key_id: str
    """Names the credential in logs and metrics (the JWT `sub`); never the secret itself."""
    tenant: str
    """The tenant the credential acts for."""
    sources: tuple[str, ...] = ()
    """Globs of the event `source`s it may publish (`*` = any run of characters); empty = any."""
    types: tuple[str, ...] = ()
    """Globs of the event `type`s it may publish; empty = any."""
    rate: float | None = None
    """Sustained limit in events per second; None = unlimited."""
    burst: int | None = None
    """Events it may send at once (the bucket size); None with a rate = one second's worth, at least 1."""

    def __post_init__(self) -> None:
        for name in ("key_id", "tenant"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"principal {name} must be a non-empty string, got {value!r}")
        for name in ("sources", "types"):
            globs = getattr(self, name)
            if not isinstance(globs, tuple) or not all(isinstance(g, str) and g for g in globs):
                raise ConfigError(
                    f"principal {self.key_id!r}: {name} must be a tuple of non-empty glob strings "
                    f"(empty tuple = any), got {globs!r}"
                )
        rate = self.rate
        if rate is not None and not (_is_finite(rate) and rate > 0):
            raise ConfigError(
                f"principal {self.key_id!r}: rate must be a positive number of events per second "
                f"or None for unlimited, got {rate!r}"
            )
        burst = self.burst
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
            raise ConfigError(f"principal {self.key_id!r}: burst must be an integer >= 1, got {burst!r}")
        if rate is None and burst is not None:
            raise ConfigError(f"principal {self.key_id!r}: burst needs a rate; set both or neither")
        if rate is not None and burst is None:
            object.__setattr__(self, "burst", max(1, math.ceil(rate)))


class ApiKeys:
    """The configured API keys; a key not in the set (never issued, or revoked) is refused."""

    __slots__ = ("_entries",)

    def __init__(self, keys: Sequence[tuple[bytes, Principal]]) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for secret, principal in keys:
            if not isinstance(secret, bytes) or not isinstance(principal, Principal):
                raise ConfigError(
                    "API key entries are (key bytes, Principal) pairs, got "
                    f"({type(secret).__name__}, {type(principal).__name__})"
                )
            if not _TOKEN.fullmatch(secret.decode("ascii", "replace")) or len(secret) > MAX_CREDENTIAL:
                raise ConfigError(
                    f"API key {principal.key_id!r} has characters a header cannot carry or is too long: "
                    "use e.g. secrets.token_urlsafe(32)"
                )
            if len(secret) < MIN_KEY:
                raise ConfigError(
                    f"API key {principal.key_id!r} is shorter than {MIN_KEY} characters: "
                    "use e.g. secrets.token_urlsafe(32)"
                )
            digest = hashlib.sha256(secret).digest()
            if any(digest == known for known, _ in entries):
                raise ConfigError(f"API key {principal.key_id!r} is configured twice: give each key once")
            entries.append((digest, principal))
        self._entries = tuple(entries)

    def __len__(self) -> int:
        """How many keys are configured."""
        return len(self._entries)

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal of the key in `headers` (lower-case names); AuthError if there is none."""
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        if authorization is not None and api_key is not None:
            raise AuthError("both authorization and x-api-key headers sent: send the key in one of them")
        if authorization is not None:
            key = _bearer(authorization)
        elif api_key is not None:
            key = _credential(api_key.strip(" \t"), "x-api-key")
        else:
            raise AuthError(f"no credentials: {_FIX_KEY}")
        digest = hashlib.sha256(key.encode("ascii")).digest()
        found: Principal | None = None
        for known, principal in self._entries:
            # Every digest is compared, without stopping at a match: the time does not tell which.
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise AuthError(f"API key not recognised (unknown or revoked): {_FIX_KEY}")
        return found


class FailClosed:
    """Credentials are required but none can be checked (a secret variable is missing): every
    request is refused with `reason`, never let through as if authentication were off."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason:
            raise ConfigError("FailClosed needs the reason requests are refused, naming the fix")
        self.reason = reason
        """Why every request is refused, with the fix (e.g. the variable to set)."""

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Never a principal: AuthError with the reason, whatever `headers` hold."""
        raise AuthError(self.reason)


class JwtVerifier:
    """Verifies HS256 JSON Web Tokens signed with one shared secret, for one audience."""

    __slots__ = ("_secret", "audience", "issuer", "leeway")

    def __init__(self, secret: bytes, audience: str, issuer: str | None = None, leeway: float = 30.0) -> None:
        if not isinstance(secret, bytes):
            raise ConfigError(f"JWT secret must be bytes, got {type(secret).__name__}")
        if len(secret) < MIN_JWT_SECRET:
            raise ConfigError(
                f"JWT secret is {len(secret)} bytes: HS256 needs at least {MIN_JWT_SECRET} random bytes"
            )
        if not isinstance(audience, str) or not audience:
            raise ConfigError(f"JWT audience must be a non-empty string, got {audience!r}")
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise ConfigError(f"JWT issuer must be a non-empty string or None, got {issuer!r}")
        if not (_is_finite(leeway) and leeway >= 0):
            raise ConfigError(f"JWT leeway must be a number of seconds >= 0, got {leeway!r}")
        self._secret = secret
        self.audience = audience
        """The `aud` a token must name (alone or in its list)."""
        self.issuer = issuer
        """The `iss` a token must carry; None = any."""
        self.leeway = float(leeway)
        """Seconds of clock skew allowed on `exp` and `nbf`."""

    def authenticate(self, headers: Mapping[str, str], *, now: float) -> Principal:
        """The principal of the `authorization: Bearer <token>` in `headers`; AuthError otherwise."""
        authorization = headers.get("authorization")
        if authorization is None:
            raise AuthError(f"no credentials: {_FIX_JWT}")
        return principal_from_claims(self.verify(_bearer(authorization, _FIX_JWT), now))

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The claims of `token` if it is a valid HS256 JWT for this audience at `now`; AuthError
        otherwise, whatever the text."""
        if not isinstance(token, str) or not token:
            raise AuthError(f"token missing: {_REISSUE}")
        if len(token) > MAX_CREDENTIAL:
            raise AuthError(f"token is longer than {MAX_CREDENTIAL} characters: {_REISSUE}")
        segments = token.split(".")
        if len(segments) == 5:
            raise AuthError(f"token is encrypted (JWE), which is not supported: {_REISSUE}")
        if len(segments) != 3:
            raise AuthError(f"token is not a JWT (header.payload.signature): {_REISSUE}")
        header_text, payload_text, signature_text = segments
        header = _json_object(_b64decode(header_text, "header"), "header")
        payload = _b64decode(payload_text, "payload")
        alg = header.get("alg")
        if isinstance(alg, str) and alg.lower() == "none":
            raise AuthError("token alg 'none' (unsigned) is refused: sign tokens with HS256")
        if alg != "HS256":
            raise AuthError(f"token alg {_show(alg)} is not accepted: only HS256 is, sign tokens with it")
        if "crit" in header:
            raise AuthError("token header lists crit extensions, which are not supported: leave crit out")
        signature = _b64decode(signature_text, "signature")
        signed = f"{header_text}.{payload_text}".encode("ascii")
        expected = hmac.new(self._secret, signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise AuthError(f"token signature does not match: {_REISSUE}")
        # The payload is parsed only once the signature shows it came from the issuer.
        claims = _json_object(payload, "payload")
        self._check_times(claims, now)
        self._check_audience(claims)
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise AuthError(
                f"token iss {_show(claims.get('iss'))} is not {self.issuer!r}: "
                "use a token from the configured issuer"
            )
        return claims

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        if "exp" not in claims:
            raise AuthError("token has no exp claim: issue tokens with an expiry time (unix seconds)")
        exp = _number_claim(claims, "exp")
        if now >= exp + self.leeway:
            raise AuthError(f"token expired at {_show(claims['exp'])} (exp): get a new token")
        if "nbf" in claims:
            nbf = _number_claim(claims, "nbf")
            if now + self.leeway < nbf:
                raise AuthError(f"token is not valid before {_show(claims['nbf'])} (nbf): use it later")
        if "iat" in claims:
            _number_claim(claims, "iat")

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        if "aud" not in claims:
            raise AuthError(f"token has no aud claim: issue it with aud {self.audience!r}")
        aud = claims["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
        if not all(isinstance(item, str) for item in audiences):
            raise AuthError(
                "token aud must be a string or a list of strings: issue it with aud " + repr(self.audience)
            )
        if self.audience not in audiences:
            raise AuthError(
                f"token aud {_show(aud)} does not name {self.audience!r}: use a token for this gateway"
            )


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """The principal a verified token's claims describe; AuthError naming the claim if they do not.

    `sub` (the key id) and `tenant` are non-empty strings; `sources` and `types` are lists of globs,
    required so that a token never grants "any" by omission (send `[]` for any); `rate` (events per
    second) and `burst` are optional, as on `Principal`.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError(
            f"token sub {_show(sub)} is not a non-empty string: issue it with sub = the client id"
        )
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise AuthError(f"token tenant {_show(tenant)} is not a non-empty string: issue it with the tenant")
    scopes: dict[str, tuple[str, ...]] = {}
    for name in ("sources", "types"):
        value = claims.get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise AuthError(
                f"token {name} {_show(value)} is not a list of non-empty glob strings: "
                f"issue it with the allowed {name} ([] for any)"
            )
        scopes[name] = tuple(value)
    rate = claims.get("rate")
    if rate is not None and not (_is_finite(rate) and rate > 0):
        raise AuthError(f"token rate {_show(rate)} is not a positive number of events per second")
    burst = claims.get("burst")
    if burst is not None and (
        rate is None or isinstance(burst, bool) or not isinstance(burst, int) or burst < 1
    ):
        raise AuthError(
            f"token burst {_show(burst)} is not an integer >= 1 with a rate: issue both or neither"
        )
    try:
        return Principal(
            key_id=sub,
            tenant=tenant,
            sources=scopes["sources"],
            types=scopes["types"],
            rate=rate,
            burst=burst,
        )
    except ConfigError as exc:  # the checks above should leave nothing for Principal to refuse
        raise AuthError(f"token claims do not describe a principal ({exc}): {_REISSUE}") from exc


def authorize(
    principal: Principal | None, *, source: str, type: str, own_types: tuple[str, ...] = ()
) -> None:
    """Refuse with ForbiddenError (naming `source` or `type`) an event `principal` may not publish
    (None: authentication is off, and only the platform's namespace is refused). `own_types`:
    platform types the endpoint itself gives the events it makes, so a caller may name them too."""
    _check_platform_names(principal, {"source": source, "type": "" if type in own_types else type})
    if principal is None:
        return
    for field, value, globs in (("source", source, principal.sources), ("type", type, principal.types)):
        if globs and not any(_glob_match(glob, value) for glob in globs):
            allowed = ", ".join(repr(glob) for glob in globs)
            raise ForbiddenError(
                field,
                f"{_show(value)} is not allowed for key {principal.key_id!r} of tenant {principal.tenant!r} "
                f"(allowed: {allowed}): publish within those or use a key scoped to it",
            )


def _check_platform_names(principal: Principal | None, values: Mapping[str, str]) -> None:
    for field, prefix in PLATFORM_NAMES:
        if not values[field].startswith(prefix):
            continue
        granted = () if principal is None else getattr(principal, f"{field}s")
        if any(glob.startswith(prefix) for glob in granted):
            continue  # `*` alone is no grant: the namespace must be named
        grant = (
            "or turn on authentication and give the relaying key"
            if principal is None
            else f"or give key {principal.key_id!r}"
        )
        raise ForbiddenError(
            field,
            f"{_show(values[field])} is in the platform's namespace ({field}s starting {prefix!r} are "
            f"published by bus itself): use a {field} of your own, {grant} a {field} glob starting "
            f"{prefix!r}",
        )


def _glob_match(glob: str, text: str) -> bool:
    """Whether `text` matches `glob`, where `*` matches any run of characters (`/` too) and nothing
    else is special. Linear in the text for each literal piece: no backtracking blow-up."""
    pieces = glob.split("*")
    if len(pieces) == 1:
        return glob == text
    first, *middle, last = pieces
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in middle:
        # Leftmost placement of each piece is optimal when `*` is the only wildcard.
        found = text.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def _bearer(value: str, fix: str = _FIX_KEY) -> str:
    """The credential of an `authorization: Bearer <credential>` value."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    if not scheme:
        raise AuthError(f"authorization header is empty: {fix}")
    if scheme.lower() != "bearer":
        # Name the scheme only when it looks like one: a bare credential must not be echoed back.
        shown = f" {scheme!r}" if _SCHEME.fullmatch(scheme) else ""
        raise AuthError(f"authorization scheme{shown} is not supported, only Bearer: {fix}")
    return _credential(rest.strip(" \t"), "authorization", fix)


def _credential(value: str, header: str, fix: str = _FIX_KEY) -> str:
    if not value:
        raise AuthError(f"{header} header has no credential: {fix}")
    if len(value) > MAX_CREDENTIAL:
        raise AuthError(f"{header} credential is longer than {MAX_CREDENTIAL} characters: {fix}")
    if not _TOKEN.fullmatch(value):
        raise AuthError(f"{header} credential is malformed (characters outside base64url): {fix}")
    return value


def _b64decode(segment: str, part: str) -> bytes:
    """A base64url segment (unpadded, canonical) as bytes."""
    if not segment:
        raise AuthError(f"token {part} is empty: {_REISSUE}")
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise AuthError(f"token {part} is not unpadded base64url: {_REISSUE}")
    try:
        decoded = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthError(f"token {part} is not base64url: {_REISSUE}") from exc
    # Refuse the other spellings of the same bytes (non-zero padding bits): one token, one text.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise AuthError(f"token {part} is not canonical base64url: {_REISSUE}")
    return decoded


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = parse_json(raw, field_name=f"token {part}", strict=True)
    except (InvalidEvent, ValueError, RecursionError) as exc:
        raise AuthError(f"token {part} is not valid JSON: {_REISSUE}") from exc
    if not isinstance(value, dict):
        raise AuthError(f"token {part} is not a JSON object: {_REISSUE}")
    return value


def _number_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if not _is_finite(value):
        raise AuthError(f"token {name} {_show(value)} is not a number of unix seconds: {_REISSUE}")
    return float(value)


def _is_finite(value: object) -> bool:
    """Whether `value` is an int or float (not a bool) that is finite as a float."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a float
        return False


def _show(value: object) -> str:
    """Untrusted text for a message: quoted, escaped, and cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."
