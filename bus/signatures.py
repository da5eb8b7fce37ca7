"""Webhook signatures for `POST /notifications/{provider}` (pure: the time is passed in).

A sender signs each delivery with a shared secret and sends two headers:

    bus-delivery: <delivery id>
    bus-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<hex HMAC-SHA256>...]

- `bus-delivery` is unique per delivery (a retry of the same delivery reuses it): 1 to 200 characters
  of `A-Z a-z 0-9 _ : -`.
- `t` is the signing time in whole unix seconds: decimal digits (at most 12), exactly once.
- `v1` is the lower-case hex HMAC-SHA256 (64 digits; upper case is accepted too), keyed with the
  secret, of the bytes `f"{t}.{delivery}.".encode() + raw_body`, where `t` is the text of the `t`
  item as sent and `raw_body` the request body exactly as sent, before any parsing. One `v1` per
  secret, at most 16: during a rotation the sender signs with the old and the new secret.
- Items are separated by `,`; spaces around an item are ignored; items with other keys (`v0`, `v2`)
  are ignored, so a future scheme can be sent alongside `v1`.

The receiver accepts a delivery when some `v1` equals the HMAC under some configured secret (all
pairs are compared in constant time, without stopping at the first mismatch) and `t` is within
±tolerance (300 s) of its clock. A `ReplayCache` then refuses a delivery id seen within the last
twice the tolerance: that is how long a captured request keeps a timestamp the window accepts.
Delivery ids are unique per sender only, so the gateway keys the cache by (provider, delivery id).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from bus.errors import ConfigError, SignatureError

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "ReplayCache",
    "SignatureError",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "bus-signature"
DELIVERY_HEADER = "bus-delivery"
MAX_SIGNATURES = 16
"""Most `v1` items one header may carry; bounds the work an unsigned request can cause."""

# No ".": it separates the id from the body in the signed bytes, so an id holding one would be
# ambiguous (t.a.b.+body == t.a.+b.body) and a captured request could be replayed under a shorter id.
_DELIVERY = re.compile(r"[A-Za-z0-9_:-]{1,200}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only; 12 digits keep int() far from its limits
_KEY = re.compile(r"[A-Za-z0-9]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DELIVERY_RULE = "use 1 to 200 characters of A-Z a-z 0-9 _ : -, unique per delivery"
_FORMAT = "expected 't=<unix seconds>,v1=<hex HMAC-SHA256>'"
_FIX_SIGN = "sign f'{t}.{delivery}.' + the raw body with HMAC-SHA256 (see README)"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery whose signature checked out."""

    id: str
    """The sender's delivery id (`bus-delivery`), the key for replay protection."""
    timestamp: int
    """The signing time in unix seconds (`t`)."""


def sign(secret: bytes | str, body: bytes, *, timestamp: int, delivery: str) -> dict[str, str]:
    """The `bus-signature` and `bus-delivery` headers for sending `body` signed with `secret` (text
    is taken as its UTF-8 bytes, as the gateway reads the secret from its variable)."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret:
        raise SignatureError("webhook secret is empty: use a long random secret")
    if not _DELIVERY.fullmatch(delivery):
        raise SignatureError(f"delivery id {_show(delivery)} is invalid: {_DELIVERY_RULE}")
    if not 0 <= timestamp < 10**12:
        raise SignatureError(f"timestamp {timestamp} is invalid: use the current time in unix seconds")
    t = str(timestamp)
    return {SIGNATURE_HEADER: f"t={t},v1={_mac(secret, t, delivery, body)}", DELIVERY_HEADER: delivery}


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Sequence[bytes],
    now: float,
    tolerance: float = 300.0,
) -> Delivery:
    """The delivery `headers` (lower-case keys) sign `body` with, if they do so with one of `secrets`
    within ±`tolerance` seconds of `now`; SignatureError otherwise."""
    if not secrets:
        raise SignatureError(
            "no webhook secret configured: set the object store's secret_env variable named in bus.yaml "
            "(comma-separated to rotate)"
        )
    if not all(secrets):
        # An empty key is one anybody can sign with: refuse everything rather than accept forgeries.
        raise SignatureError("a configured webhook secret is empty: set a long random secret")
    header = headers.get(SIGNATURE_HEADER)
    if header is None or not header.strip():
        raise SignatureError(
            f"{SIGNATURE_HEADER} header missing: sign the body with HMAC-SHA256 (see README)"
        )
    t, candidates = _parse(header)
    delivery = headers.get(DELIVERY_HEADER)
    if delivery is None:
        raise SignatureError(f"{DELIVERY_HEADER} header missing: send a unique id with each delivery")
    if not _DELIVERY.fullmatch(delivery):
        raise SignatureError(f"{DELIVERY_HEADER} {_show(delivery)} is invalid: {_DELIVERY_RULE}")
    expected = [_mac(secret, t, delivery, body).encode("ascii") for secret in secrets]
    matched = False
    for mac in expected:
        for candidate in candidates:
            # No early exit: the time taken does not tell which secret or which v1 came close.
            matched |= hmac.compare_digest(mac, candidate)
    if not matched:
        raise SignatureError(
            f"{SIGNATURE_HEADER} does not match any configured secret: {_FIX_SIGN}, "
            "with the secret configured for this provider"
        )
    timestamp = int(t)
    age = now - timestamp
    if abs(age) > tolerance:
        direction = "in the past" if age > 0 else "in the future"
        raise SignatureError(
            f"{SIGNATURE_HEADER} timestamp is {_seconds(abs(age))} s {direction} (at most "
            f"{_seconds(tolerance)} s allowed): sign each delivery when sending it, on a clock kept by NTP"
        )
    return Delivery(id=delivery, timestamp=timestamp)


class ReplayCache:
    """Delivery ids seen in the last `ttl` seconds, at most `max_entries` (the oldest go first).

    An id is any hashable key: the gateway's is (provider, delivery id). For one asyncio process: no
    locks. An id is reserved while its events are being published, then accepted (kept for `ttl`
    seconds from then) or released (so the sender's retry gets through). A reservation that is never
    settled lapses after `ttl` seconds, like an acceptance. `in_flight` tells a refused reservation
    (retry later: the publish may still fail) from an acceptance (a replay).
    """

    __slots__ = ("_entries", "max_entries", "ttl")

    def __init__(self, *, ttl: float = 600.0, max_entries: int = 100_000) -> None:
        if not ttl > 0:
            raise ConfigError(f"replay cache ttl must be a positive number of seconds, got {ttl!r}")
        if max_entries < 1:
            raise ConfigError(f"replay cache max_entries must be at least 1, got {max_entries!r}")
        self.ttl = ttl
        """Seconds an id is remembered; at least twice the signature tolerance."""
        self.max_entries = max_entries
        """Most ids remembered; past it the oldest are forgotten (memory stays bounded under a flood)."""
        # id -> (expires at, accepted). Kept in the order of the last change, so (for a clock that does
        # not go back) the entries that expire first are at the front.
        self._entries: OrderedDict[Hashable, tuple[float, bool]] = OrderedDict()

    def reserve(self, delivery_id: Hashable, now: float) -> bool:
        """Reserve `delivery_id` for publishing: False if it is reserved or accepted and not expired."""
        self._expire(now)
        entry = self._entries.get(delivery_id)
        if entry is not None and entry[0] > now:
            return False
        self._put(delivery_id, now, accepted=False)
        return True

    def in_flight(self, delivery_id: Hashable, now: float) -> bool:
        """True while `delivery_id` is reserved, not yet accepted nor released (and not lapsed)."""
        entry = self._entries.get(delivery_id)
        return entry is not None and entry[0] > now and not entry[1]

    def release(self, delivery_id: Hashable) -> None:
        """Forget a reservation whose publish failed; an accepted id stays remembered."""
        entry = self._entries.get(delivery_id)
        if entry is not None and not entry[1]:
            del self._entries[delivery_id]

    def accept(self, delivery_id: Hashable, now: float) -> None:
        """Remember `delivery_id` as published, for `ttl` seconds from `now`."""
        self._expire(now)
        self._put(delivery_id, now, accepted=True)

    def __len__(self) -> int:
        """How many ids are remembered (expired ones may linger until the next reserve or accept)."""
        return len(self._entries)

    def _put(self, delivery_id: Hashable, now: float, *, accepted: bool) -> None:
        self._entries.pop(delivery_id, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[delivery_id] = (now + self.ttl, accepted)

    def _expire(self, now: float) -> None:
        # Amortised O(1): each entry is dropped once. An entry out of order (clock stepped back) is
        # still checked on its own in reserve, and eventually evicted by size.
        while self._entries:
            expires, _ = next(iter(self._entries.values()))
            if expires > now:
                return
            self._entries.popitem(last=False)


def _parse(header: str) -> tuple[str, list[bytes]]:
    """The `t` text and the `v1` values (lower-case ASCII hex) of a `bus-signature` header."""
    t: str | None = None
    candidates: list[bytes] = []
    for raw in header.split(","):
        item = raw.strip(" \t")
        key, eq, value = item.partition("=")
        if not eq or not value or not _KEY.fullmatch(key):
            raise SignatureError(f"{SIGNATURE_HEADER} header malformed at {_show(item)}: {_FORMAT}")
        if key == "t":
            if t is not None:
                raise SignatureError(f"{SIGNATURE_HEADER} header has more than one t=: send exactly one")
            if not _TIMESTAMP.fullmatch(value):
                raise SignatureError(
                    f"{SIGNATURE_HEADER} timestamp {_show(value)} is not whole unix seconds: "
                    "send t=<decimal digits>, e.g. t=1700000000"
                )
            t = value
        elif key == "v1":
            if not _HEX.fullmatch(value):
                raise SignatureError(
                    f"{SIGNATURE_HEADER} v1 {_show(value)} is not hex: send the hex digest of HMAC-SHA256"
                )
            # A v1 of the wrong length is kept: it simply never matches.
            candidates.append(value.lower().encode("ascii"))
            if len(candidates) > MAX_SIGNATURES:
                raise SignatureError(
                    f"{SIGNATURE_HEADER} header has more than {MAX_SIGNATURES} v1 signatures: "
                    "send one per current secret"
                )
    if t is None:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no t=<unix seconds>: {_FORMAT}")
    if not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no v1=<hex HMAC-SHA256>: {_FIX_SIGN}")
    return t, candidates


def _mac(secret: bytes, t: str, delivery: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `{t}.{delivery}.` + body under `secret`."""
    return hmac.new(secret, f"{t}.{delivery}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def _show(text: str) -> str:
    """Header text for a message: quoted, escaped, and cut short (it comes from the sender)."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _seconds(value: float) -> str:
    """Seconds as short text: 412, 300.5."""
    return f"{value:.3f}".rstrip("0").rstrip(".")
