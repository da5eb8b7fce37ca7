"""Webhook signatures and replay protection for notifications (RELIABILITY S1, S2; SPEC §8)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import re
import string

import pytest

from bus.errors import BusError, ConfigError
from bus.signatures import Delivery, ReplayCache, SignatureError, sign, verify

NEW = b"whsec-new"
OLD = b"whsec-old"
BODY = b'{"Records":[]}'
NOW = 1_700_000_000
DELIVERY = "d-1"
GOLDEN_V1 = "7a4a0eecc9a1ae37a1f9913ea79eb76a5e059b2eb81e5507ed6d8a6bc9368d5c"
"""`printf '1700000000.d-1.{"Records":[]}' | openssl dgst -sha256 -hmac whsec-new`"""


def signed(
    secret: bytes = NEW, body: bytes = BODY, *, timestamp: int = NOW, delivery: str = DELIVERY
) -> dict[str, str]:
    """Headers of a delivery signed as a well-behaved sender would."""
    return sign(secret, body, timestamp=timestamp, delivery=delivery)


def refusal(
    headers: dict[str, str],
    body: bytes = BODY,
    *,
    secrets: tuple[bytes, ...] = (NEW,),
    now: float = NOW,
    tolerance: float = 300.0,
) -> str:
    """The reason verify gives for refusing a delivery (the test fails if it is accepted)."""
    with pytest.raises(SignatureError) as caught:
        verify(headers, body, secrets=secrets, now=now, tolerance=tolerance)
    return caught.value.reason


def with_signature(value: str, delivery: str = DELIVERY) -> dict[str, str]:
    """Headers with a given `bus-signature` value."""
    return {"bus-signature": value, "bus-delivery": delivery}


def test_sign_matches_the_documented_scheme() -> None:
    """sign() sends t and v1 = hex HMAC-SHA256 of `{t}.{delivery}.` + body, checked against openssl."""
    assert signed() == {"bus-signature": f"t={NOW},v1={GOLDEN_V1}", "bus-delivery": DELIVERY}
    expected = hmac.new(NEW, f"{NOW}.{DELIVERY}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert expected == GOLDEN_V1


def test_a_text_secret_signs_as_its_utf8_bytes() -> None:
    """sign() takes the secret as the variable holds it, text, as well as bytes."""
    assert sign(NEW.decode(), BODY, timestamp=NOW, delivery=DELIVERY) == signed()


def test_valid_signature_is_accepted() -> None:
    """A delivery signed with the configured secret, on time, gives its id and timestamp."""
    assert verify(signed(), BODY, secrets=[NEW], now=NOW) == Delivery(id=DELIVERY, timestamp=NOW)


@pytest.mark.parametrize(
    "body", [b"", b"not json at all", bytes(range(256)), b"\xff\xfe invalid utf-8", BODY * 1000]
)
def test_signature_is_over_the_raw_bytes(body: bytes) -> None:
    """Any body, JSON or not, is verified as raw bytes: the check comes before any parsing."""
    assert verify(signed(body=body), body, secrets=[NEW], now=NOW).id == DELIVERY


def test_delivery_is_a_frozen_slotted_value() -> None:
    """Delivery cannot be changed after verify returned it."""
    delivery = Delivery(id=DELIVERY, timestamp=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delivery.id = "other"  # type: ignore[misc]
    assert not hasattr(delivery, "__dict__")


def test_wrong_secret_is_refused() -> None:
    """A delivery signed with a secret the gateway does not hold is refused."""
    assert "does not match any configured secret" in refusal(signed(b"guessed"))


@pytest.mark.parametrize("position", range(len(BODY)))
def test_one_byte_tamper_of_the_body_is_refused(position: int) -> None:
    """Changing any one byte of the body after signing breaks the signature."""
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    assert "does not match" in refusal(signed(), bytes(tampered))


@pytest.mark.parametrize(
    "body",
    [BODY[:-1], b"", BODY + b" ", BODY + b"\x00", b" " + BODY],
    ids=["cut", "empty", "sp", "nul", "pre"],
)
def test_truncated_or_extended_body_is_refused(body: bytes) -> None:
    """A body cut short or with bytes added is not the body that was signed."""
    assert "does not match" in refusal(signed(), body)


@pytest.mark.parametrize(
    "headers",
    [
        {"bus-signature": f"t={NOW + 1},v1={GOLDEN_V1}", "bus-delivery": DELIVERY},
        {"bus-signature": f"t={NOW},v1={GOLDEN_V1}", "bus-delivery": "d-2"},
        {"bus-signature": f"t={NOW},v1={GOLDEN_V1[:-1]}0", "bus-delivery": DELIVERY},
    ],
    ids=["timestamp", "delivery", "digest"],
)
def test_signed_fields_cannot_be_changed(headers: dict[str, str]) -> None:
    """The timestamp and the delivery id are signed too: changing either breaks the signature."""
    assert "does not match" in refusal(headers)


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"bus-delivery": DELIVERY}, "bus-signature header missing: sign the body with HMAC-SHA256"),
        (with_signature(""), "bus-signature header missing"),
        (with_signature("  "), "bus-signature header missing"),
        ({"bus-signature": f"t={NOW},v1={GOLDEN_V1}"}, "bus-delivery header missing"),
        ({}, "bus-signature header missing"),
        ({"Bus-Signature": f"t={NOW},v1={GOLDEN_V1}", "bus-delivery": DELIVERY}, "header missing"),
    ],
    ids=["signature", "empty", "blank", "delivery", "both", "not-lower-case"],
)
def test_missing_headers_are_refused(headers: dict[str, str], needle: str) -> None:
    """Without both headers (keys lower-case, as the gateway passes them) nothing is accepted."""
    assert needle in refusal(headers)


def test_missing_signature_says_how_to_fix_it() -> None:
    """The refusal for an unsigned delivery names the header and the fix."""
    reason = refusal({"bus-delivery": DELIVERY})
    assert reason.startswith("bus-signature header missing: sign the body with HMAC-SHA256")
    assert "README" in reason


VALID_HEADER = f"t={NOW},v1={GOLDEN_V1}"


@pytest.mark.parametrize("length", range(len(VALID_HEADER)))
def test_every_truncation_of_the_signature_header_is_refused(length: int) -> None:
    """Every proper prefix of a valid `bus-signature` value is refused, never with another error."""
    refusal(with_signature(VALID_HEADER[:length]))


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("garbage", "malformed"),
        (f"t={NOW};v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t={NOW},,v1={GOLDEN_V1}", "malformed"),
        (f"t={NOW},v1={GOLDEN_V1},", "malformed"),
        (f"t={NOW},v1", "malformed"),
        (f"t={NOW},v1=", "malformed"),
        (f"=1,t={NOW},v1={GOLDEN_V1}", "malformed"),
        (f"t ={NOW},v1={GOLDEN_V1}", "malformed"),
        (f"t={NOW},v1={GOLDEN_V1},t={NOW}", "more than one t="),
        (f"v1={GOLDEN_V1}", "no t=<unix seconds>"),
        (f"t={NOW}", "no v1=<hex HMAC-SHA256>"),
        (f"t={NOW},v0={GOLDEN_V1}", "no v1="),
        ("t=,v1=" + GOLDEN_V1, "malformed"),
        (f"t=-{NOW},v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t=+{NOW},v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t={NOW}.5,v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t=1e9,v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t=0x{NOW:x},v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t={NOW} 1,v1={GOLDEN_V1}", "is not whole unix seconds"),
        (
            f"t=\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660,v1={GOLDEN_V1}",
            "is not whole unix seconds",
        ),
        (f"t={'9' * 13},v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t={'9' * 5000},v1={GOLDEN_V1}", "is not whole unix seconds"),
        (f"t={NOW},v1=sha256={GOLDEN_V1}", "is not hex"),
        (f"t={NOW},v1={GOLDEN_V1[:-1]}g", "is not hex"),
        (f"t={NOW},v1=\uff10{GOLDEN_V1[1:]}", "is not hex"),
        (f"t={NOW},v1={GOLDEN_V1} x", "is not hex"),
    ],
)
def test_malformed_signature_header_is_refused(value: str, needle: str) -> None:
    """A `bus-signature` that is not `t=<digits>,v1=<hex>` is refused with a reason naming the part."""
    assert needle in refusal(with_signature(value))


@pytest.mark.parametrize(
    "v1",
    ["0", GOLDEN_V1[:-1], GOLDEN_V1 + "0", GOLDEN_V1 * 2, GOLDEN_V1[:32], "0" * 64, "f" * 4096],
)
def test_v1_of_the_wrong_length_or_value_is_a_mismatch(v1: str) -> None:
    """A hex v1 that is not the right digest, whatever its length, is refused as a mismatch."""
    assert "does not match" in refusal(with_signature(f"t={NOW},v1={v1}"))


@pytest.mark.parametrize(
    "value",
    [
        f"t={NOW},v1={GOLDEN_V1.upper()}",
        f" t={NOW} , v1={GOLDEN_V1} ",
        f"v1={GOLDEN_V1},t={NOW}",
        f"t={NOW},v0=anything,v1={GOLDEN_V1},v2=future",
        f"t={NOW},v1={'0' * 64},v1={GOLDEN_V1}",
    ],
    ids=["upper-hex", "spaces", "order", "other-schemes", "second-v1"],
)
def test_tolerated_variations_are_accepted(value: str) -> None:
    """Upper-case hex, spaces around items, any item order, other schemes and extra v1s are accepted."""
    assert verify(with_signature(value), BODY, secrets=[NEW], now=NOW).timestamp == NOW


def test_more_than_sixteen_signatures_are_refused() -> None:
    """A header may carry at most 16 v1 items, which bounds what an unsigned request can cost."""
    decoys = ",".join(f"v1={i:064x}" for i in range(15))
    assert verify(with_signature(f"t={NOW},{decoys},v1={GOLDEN_V1}"), BODY, secrets=[NEW], now=NOW)
    decoys = ",".join(f"v1={i:064x}" for i in range(16))
    assert "more than 16 v1 signatures" in refusal(with_signature(f"t={NOW},{decoys},v1={GOLDEN_V1}"))


@pytest.mark.parametrize(
    "delivery",
    ["", "a" * 201, "d 1", "d/1", "d\n1", "d-1\n", "délivery", "d\x00", "d,1", "d;1", "d=1", "😀", "d.1"],
)
def test_invalid_delivery_id_is_refused(delivery: str) -> None:
    """A `bus-delivery` outside 1-200 characters of [A-Za-z0-9_:-] is refused."""
    headers = {"bus-signature": VALID_HEADER, "bus-delivery": delivery}
    assert "bus-delivery" in refusal(headers)
    assert "A-Z a-z 0-9 _ : -" in refusal(headers)


@pytest.mark.parametrize(
    "delivery", ["a", "a" * 200, "0f8fad5b-d9cb-469f-a165-70867728950e", "s3:obj:v2_A-Z", "72d3162e-cc78"]
)
def test_valid_delivery_ids_are_accepted(delivery: str) -> None:
    """Any 1-200 characters of [A-Za-z0-9_:-] work as a delivery id, e.g. a UUID."""
    assert verify(signed(delivery=delivery), BODY, secrets=[NEW], now=NOW).id == delivery


@pytest.mark.parametrize(
    ("signer", "configured"),
    [
        (NEW, (OLD, NEW)),
        (OLD, (OLD, NEW)),
        (NEW, (NEW, OLD)),
        (OLD, (NEW, OLD)),
    ],
)
def test_rotation_accepts_every_configured_secret(signer: bytes, configured: tuple[bytes, ...]) -> None:
    """While old and new secrets are both configured, a sender using either one is accepted."""
    assert verify(signed(signer), BODY, secrets=configured, now=NOW).id == DELIVERY


def signed_with_both() -> dict[str, str]:
    """Headers of a sender that signs with the old and the new secret during a rotation."""
    old = signed(OLD)["bus-signature"].split(",")[1]
    return with_signature(f"{signed(NEW)['bus-signature']},{old}")


@pytest.mark.parametrize("configured", [(NEW,), (OLD,), (OLD, NEW)], ids=["new", "old", "both"])
def test_rotation_sender_signing_with_both_secrets_is_accepted(configured: tuple[bytes, ...]) -> None:
    """A sender signing with both secrets is accepted before, during and after the gateway switches."""
    assert verify(signed_with_both(), BODY, secrets=configured, now=NOW).id == DELIVERY


def test_rotation_retired_secret_is_refused() -> None:
    """Once only the new secret is configured, a sender still using only the old one is refused."""
    assert "does not match" in refusal(signed(OLD), secrets=(NEW,))


def test_every_secret_and_signature_pair_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify compares every (secret, v1) pair with compare_digest, even after the first matches."""
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    verify(signed_with_both(), BODY, secrets=[NEW, OLD, b"third"], now=NOW)
    assert len(calls) == 3 * 2


@pytest.mark.parametrize("secrets", [(), []], ids=["tuple", "list"])
def test_no_secret_configured_is_refused(secrets: tuple[bytes, ...]) -> None:
    """With no secret configured nothing verifies, and the reason says what to configure."""
    reason = refusal(signed(), secrets=secrets)
    assert reason.startswith("no webhook secret configured")
    assert "secret_env" in reason


@pytest.mark.parametrize("secrets", [(b"",), (NEW, b"")], ids=["only", "among"])
def test_an_empty_secret_refuses_everything(secrets: tuple[bytes, ...]) -> None:
    """An empty secret is one anybody could sign with, so verify refuses even a valid signature."""
    forgery = hmac.new(b"", f"{NOW}.{DELIVERY}.".encode() + BODY, hashlib.sha256).hexdigest()
    forged = with_signature(f"t={NOW},v1={forgery}")
    assert "empty" in refusal(signed(), secrets=secrets)
    assert "empty" in refusal(forged, secrets=secrets)


@pytest.mark.parametrize("offset", [0, 1, -1, 299, -299, 300, -300, 299.999, -300.0])
def test_timestamps_within_tolerance_are_accepted(offset: float) -> None:
    """A timestamp up to and including ±300 s from the gateway's clock is accepted."""
    assert verify(signed(), BODY, secrets=[NEW], now=NOW + offset).timestamp == NOW


@pytest.mark.parametrize(
    ("offset", "said"),
    [
        (300.001, "300.001 s in the past"),
        (301, "301 s in the past"),
        (86_400, "86400 s in the past"),
        (NOW, f"{NOW} s in the past"),
        (-300.5, "300.5 s in the future"),
        (-301, "301 s in the future"),
        (-86_400, "86400 s in the future"),
    ],
)
def test_timestamps_beyond_tolerance_are_refused(offset: float, said: str) -> None:
    """A timestamp more than 300 s off is refused, saying which way, by how much, and the fix."""
    reason = refusal(signed(), now=NOW + offset)
    assert reason.startswith(f"bus-signature timestamp is {said} (at most 300 s allowed)")
    assert "NTP" in reason


@pytest.mark.parametrize(("tolerance", "offset", "ok"), [(60, 60, True), (60, 61, False), (0, 0, True)])
def test_tolerance_is_configurable(tolerance: float, offset: int, ok: bool) -> None:
    """The window is ±tolerance, inclusive, whatever the gateway configures."""
    if ok:
        verify(signed(), BODY, secrets=[NEW], now=NOW - offset, tolerance=tolerance)
    else:
        assert "in the future" in refusal(signed(), now=NOW - offset, tolerance=tolerance)


def test_a_stale_replay_of_a_valid_delivery_is_refused() -> None:
    """A captured request replayed after the window is refused even though its signature is valid."""
    assert "in the past" in refusal(signed(), now=NOW + 3600)


def test_signature_error_is_a_bus_error_with_a_reason() -> None:
    """SignatureError sits under BusError, is not retriable, and its text is its reason."""
    error = SignatureError("bus-signature header missing: sign it")
    assert isinstance(error, BusError)
    assert not error.retriable
    assert str(error) == error.reason == "bus-signature header missing: sign it"


def test_sender_text_in_reasons_is_quoted_and_cut_short() -> None:
    """Header text echoed in a reason is repr-quoted and at most 40 characters, so logs stay one line."""
    reason = refusal(with_signature("t=" + "\n" * 100 + ",v1=0"))
    assert "\n" not in reason
    assert len(reason) < 300


@pytest.mark.parametrize(
    ("secret", "timestamp", "delivery", "needle"),
    [
        (b"", NOW, DELIVERY, "secret is empty"),
        (NEW, -1, DELIVERY, "timestamp -1 is invalid"),
        (NEW, 10**12, DELIVERY, "is invalid"),
        (NEW, NOW, "", "delivery id '' is invalid"),
        (NEW, NOW, "d 1", "delivery id 'd 1' is invalid"),
    ],
)
def test_sign_refuses_what_verify_would_refuse(
    secret: bytes, timestamp: int, delivery: str, needle: str
) -> None:
    """sign() does not produce headers that verify could never accept."""
    with pytest.raises(SignatureError, match=re.escape(needle)):
        sign(secret, BODY, timestamp=timestamp, delivery=delivery)


# --- fuzz --------------------------------------------------------------------------------------------

PIECES = [
    "t",
    "v1",
    "v0",
    "=",
    ",",
    " ",
    "\t",
    "\n",
    "\r\n",
    str(NOW),
    "-1",
    "9" * 40,
    GOLDEN_V1,
    GOLDEN_V1[:10],
    GOLDEN_V1.upper(),
    "\x00",
    "\ud800",
    "é",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit, not to the scheme
    "\uff10",  # FULLWIDTH DIGIT ZERO
    "😀",
    "==",
    ",,",
    "t=",
    "v1=",
    f"t={NOW}",
    f"v1={GOLDEN_V1}",
    "sha256=",
]


def random_text(rng: random.Random) -> str:
    """Header-ish text: valid fragments, separators and junk (non-ASCII, surrogates, control characters)."""
    match rng.randrange(5):
        case 0:
            return "".join(rng.choice(PIECES) for _ in range(rng.randrange(12)))
        case 1:
            return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(30)))
        case 2:
            return "".join(rng.choice(string.printable) for _ in range(rng.randrange(80)))
        case 3:
            return VALID_HEADER
        case _:
            valid = VALID_HEADER
            i, j = sorted(rng.randrange(len(valid) + 1) for _ in range(2))
            return valid[:i] + rng.choice(PIECES) + valid[j:]


def random_headers(rng: random.Random) -> dict[str, str]:
    """A header mapping that may lack either header or hold random text in it."""
    headers: dict[str, str] = {}
    if rng.random() < 0.9:
        headers["bus-signature"] = random_text(rng)
    if rng.random() < 0.9:
        headers["bus-delivery"] = rng.choice([DELIVERY, random_text(rng), "x" * rng.randrange(300)])
    return headers


def test_fuzzed_headers_raise_only_signature_error() -> None:
    """Whatever the headers hold, verify returns a Delivery or raises SignatureError, nothing else."""
    rng = random.Random(20240531)
    accepted = 0
    for _ in range(20_000):
        headers = random_headers(rng)
        body = rng.choice([BODY, b"", rng.randbytes(rng.randrange(64))])
        secrets = rng.choice([(NEW,), (OLD, NEW), (b"\x00" * 64,)])
        try:
            delivery = verify(headers, body, secrets=secrets, now=NOW + rng.uniform(-400, 400))
        except SignatureError:
            continue
        accepted += 1
        assert delivery.id == headers["bus-delivery"]
        assert body == BODY
        assert NEW in secrets
    assert 0 < accepted < 1_000  # the accepting path is reached, by the few unbroken valid headers


# --- replay cache ------------------------------------------------------------------------------------


def test_replay_cache_defaults() -> None:
    """By default ids are remembered 600 s (twice the 300 s window), at most 100,000 of them."""
    cache = ReplayCache()
    assert cache.ttl == 600.0
    assert cache.max_entries == 100_000


def test_second_reserve_of_the_same_id_is_refused() -> None:
    """While a delivery is being published, the same id again is refused."""
    cache = ReplayCache()
    assert cache.reserve("d-1", NOW)
    assert not cache.reserve("d-1", NOW + 1)
    assert cache.reserve("d-2", NOW + 1)


def test_an_accepted_id_is_refused_until_it_expires() -> None:
    """After a successful publish, the same id is refused for ttl seconds from acceptance."""
    cache = ReplayCache(ttl=600)
    assert cache.reserve("d-1", NOW)
    cache.accept("d-1", NOW + 10)
    assert not cache.reserve("d-1", NOW + 609.999)
    assert cache.reserve("d-1", NOW + 610)


def test_in_flight_tells_a_reservation_from_an_acceptance() -> None:
    """A reserved id is in flight (the sender should retry later); accepted or released, it is not."""
    cache = ReplayCache(ttl=600)
    assert not cache.in_flight("d-1", NOW)
    assert cache.reserve("d-1", NOW)
    assert cache.in_flight("d-1", NOW + 1)
    assert not cache.in_flight("d-1", NOW + 600), "a lapsed reservation is not in flight"
    cache.accept("d-1", NOW + 1)
    assert not cache.in_flight("d-1", NOW + 2)
    assert cache.reserve("d-2", NOW)
    cache.release("d-2")
    assert not cache.in_flight("d-2", NOW)


def test_keys_may_be_provider_and_delivery_id() -> None:
    """The same delivery id from two providers is two entries."""
    cache = ReplayCache()
    assert cache.reserve(("s3", "42"), NOW)
    assert cache.reserve(("minio", "42"), NOW)
    assert not cache.reserve(("s3", "42"), NOW)


def test_release_lets_the_senders_retry_through() -> None:
    """After a failed publish the id is released, so the sender's retry is reserved again."""
    cache = ReplayCache()
    assert cache.reserve("d-1", NOW)
    cache.release("d-1")
    assert cache.reserve("d-1", NOW + 1)


def test_release_does_not_forget_an_accepted_id() -> None:
    """Releasing an id that was already accepted keeps it refused (a late release cannot open a replay)."""
    cache = ReplayCache()
    assert cache.reserve("d-1", NOW)
    cache.accept("d-1", NOW)
    cache.release("d-1")
    assert not cache.reserve("d-1", NOW + 1)


def test_release_of_an_unknown_id_is_harmless() -> None:
    """Releasing an id that is not reserved does nothing."""
    cache = ReplayCache()
    cache.release("never-seen")
    assert len(cache) == 0


def test_an_unsettled_reservation_lapses_after_ttl() -> None:
    """A reservation that is never accepted nor released stops blocking the id after ttl seconds."""
    cache = ReplayCache(ttl=600)
    assert cache.reserve("d-1", NOW)
    assert not cache.reserve("d-1", NOW + 599)
    assert cache.reserve("d-1", NOW + 600)


def test_accept_without_reserve_is_remembered() -> None:
    """An id accepted without a reservation (e.g. evicted meanwhile) is still refused afterwards."""
    cache = ReplayCache()
    cache.accept("d-1", NOW)
    assert not cache.reserve("d-1", NOW)


def test_expired_ids_are_dropped() -> None:
    """Expired ids are removed as time passes, so memory follows the recent rate, not all history."""
    cache = ReplayCache(ttl=10)
    for i in range(100):
        assert cache.reserve(f"d-{i}", NOW + i * 0.01)
        cache.accept(f"d-{i}", NOW + i * 0.01)
    assert len(cache) == 100
    assert cache.reserve("late", NOW + 100)
    assert len(cache) == 1


def test_bounded_size_evicts_the_oldest_first() -> None:
    """Past max_entries the least recently stored ids are forgotten first."""
    cache = ReplayCache(max_entries=3)
    for name in ["a", "b", "c"]:
        assert cache.reserve(name, NOW)
    cache.accept("a", NOW)  # accepting refreshes "a": "b" is now the oldest
    assert cache.reserve("d", NOW)
    assert len(cache) == 3
    assert not cache.reserve("a", NOW)
    assert not cache.reserve("c", NOW)
    assert not cache.reserve("d", NOW)
    assert cache.reserve("b", NOW)
    assert len(cache) == 3


def test_size_stays_bounded_under_a_flood() -> None:
    """A flood of distinct ids within the ttl never grows the cache past max_entries."""
    cache = ReplayCache(max_entries=1_000)
    for i in range(10_000):
        assert cache.reserve(f"d-{i}", NOW)
    assert len(cache) == 1_000
    assert not cache.reserve("d-9999", NOW)
    assert cache.reserve("d-0", NOW)


def test_a_clock_stepping_back_does_not_readmit_a_replay() -> None:
    """If the clock steps back, an id accepted later is still refused within its own ttl."""
    cache = ReplayCache(ttl=600)
    cache.accept("d-1", NOW)
    cache.accept("d-2", NOW - 500)  # expires before d-1 but sits behind it
    assert not cache.reserve("d-2", NOW - 400)
    assert cache.reserve("d-2", NOW + 100)


@pytest.mark.parametrize(("ttl", "max_entries"), [(0, 10), (-1, 10), (float("nan"), 10), (10, 0), (10, -5)])
def test_replay_cache_refuses_a_useless_configuration(ttl: float, max_entries: int) -> None:
    """A ttl that is not positive or a max_entries below 1 is a configuration error."""
    with pytest.raises(ConfigError):
        ReplayCache(ttl=ttl, max_entries=max_entries)


def test_verify_then_replay_cache_accepts_one_delivery_once() -> None:
    """S2 end to end in the core: the same signed delivery sent twice yields one acceptance."""
    cache = ReplayCache()
    outcomes = []
    for arrival in [NOW, NOW + 5]:
        delivery = verify(signed(), BODY, secrets=[NEW], now=arrival)
        reserved = cache.reserve(delivery.id, arrival)
        if reserved:
            cache.accept(delivery.id, arrival)
        outcomes.append(reserved)
    assert outcomes == [True, False]
