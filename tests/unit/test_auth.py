"""Credentials and scopes for `POST /events` (RELIABILITY S6, S7; SPEC §8)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import random
import string
from typing import Any

import pytest

from bus.auth import (
    ApiKeys,
    AuthError,
    ForbiddenError,
    JwtVerifier,
    Principal,
    authorize,
    principal_from_claims,
)
from bus.errors import BusError, ConfigError

KEY_A = b"key-a-0123456789abcdef-shop"
KEY_B = b"key-b-0123456789abcdef-bank"
KEY_OLD = b"key-old-0123456789abcdef-shop"
SECRET = b"jwt-secret-0123456789abcdef-0123456789"
OTHER_SECRET = b"jwt-other-0123456789abcdef-0123456789"
AUDIENCE = "bus-gateway"
ISSUER = "https://issuer.example"
NOW = 1_700_000_000.0

SHOP = Principal(key_id="shop-1", tenant="shop", sources=("app://shop/*",), types=("com.shop.*",))
BANK = Principal(key_id="bank-1", tenant="bank", sources=("app://bank/*",), types=("com.bank.*",))


# --- helpers -----------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs encode each segment."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(
    claims: dict[str, Any] | None = None,
    *,
    header: dict[str, Any] | None = None,
    secret: bytes = SECRET,
    **overrides: Any,
) -> str:
    """A compact JWT signed with HMAC-SHA256, built by hand from its three segments."""
    body = valid_claims() if claims is None else claims
    body = {**body, **overrides}
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"} if header is None else header).encode())
    payload = b64url(json.dumps(body).encode())
    signature = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64url(signature)}"


def valid_claims() -> dict[str, Any]:
    """Claims of a token the verifier accepts at NOW."""
    return {
        "sub": "client-7",
        "tenant": "shop",
        "sources": ["app://shop/*"],
        "types": ["com.shop.*"],
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": NOW + 300,
        "nbf": NOW - 10,
        "iat": NOW - 10,
    }


def verifier(*, issuer: str | None = ISSUER, leeway: float = 30.0) -> JwtVerifier:
    """The gateway's verifier for these tests."""
    return JwtVerifier(SECRET, AUDIENCE, issuer=issuer, leeway=leeway)


def jwt_refusal(token: str, *, now: float = NOW, issuer: str | None = ISSUER) -> str:
    """The reason verify gives for refusing `token` (the test fails if it is accepted)."""
    with pytest.raises(AuthError) as caught:
        verifier(issuer=issuer).verify(token, now)
    return caught.value.reason


def keys() -> ApiKeys:
    """Two tenants' keys, the shop's in rotation (old and new both valid)."""
    return ApiKeys([(KEY_A, SHOP), (KEY_OLD, SHOP), (KEY_B, BANK)])


def key_refusal(headers: dict[str, str], api_keys: ApiKeys | None = None) -> str:
    """The reason authenticate gives for refusing `headers`."""
    with pytest.raises(AuthError) as caught:
        (keys() if api_keys is None else api_keys).authenticate(headers)
    return caught.value.reason


# --- public API and errors ---------------------------------------------------------------------------


def test_errors_are_bus_errors_with_a_reason() -> None:
    """AuthError and ForbiddenError share bus's error root and carry the reason (and the field)."""
    assert issubclass(AuthError, BusError)
    assert issubclass(ForbiddenError, BusError)
    assert AuthError("why").reason == "why"
    forbidden = ForbiddenError("source", "why")
    assert (forbidden.field, forbidden.reason, str(forbidden)) == ("source", "why", "source: why")


# --- Principal ---------------------------------------------------------------------------------------


def test_principal_is_a_frozen_slotted_value() -> None:
    """A principal cannot be changed once authenticated."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        SHOP.tenant = "bank"  # type: ignore[misc]
    assert not hasattr(SHOP, "__dict__")


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [(None, None, None), (5.0, None, 5), (0.5, None, 1), (2.5, None, 3), (5.0, 50, 50)],
)
def test_burst_defaults_to_one_seconds_worth(
    rate: float | None, burst: int | None, expected: int | None
) -> None:
    """A rate without a burst gets a bucket of one second's worth of events, at least one."""
    assert Principal(key_id="k", tenant="t", rate=rate, burst=burst).burst == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"key_id": ""},
        {"tenant": ""},
        {"tenant": None},
        {"sources": "app://shop/*"},
        {"sources": ["app://shop/*"]},
        {"types": ("",)},
        {"rate": 0},
        {"rate": -1.0},
        {"rate": float("inf")},
        {"rate": float("nan")},
        {"rate": True},
        {"rate": 10**400},
        {"rate": 1.0, "burst": 0},
        {"rate": 1.0, "burst": 1.5},
        {"burst": 10},
    ],
)
def test_invalid_principal_is_a_config_error(fields: dict[str, Any]) -> None:
    """A principal with an empty name, a non-tuple scope or a meaningless limit is refused at load."""
    base: dict[str, Any] = {"key_id": "k", "tenant": "t"}
    with pytest.raises(ConfigError):
        Principal(**{**base, **fields})


# --- API keys (S6) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "principal"),
    [
        ({"authorization": f"Bearer {KEY_A.decode()}"}, SHOP),
        ({"authorization": f"bearer {KEY_A.decode()}"}, SHOP),
        ({"authorization": f"  BEARER   {KEY_A.decode()}  "}, SHOP),
        ({"x-api-key": KEY_A.decode()}, SHOP),
        ({"x-api-key": f" {KEY_A.decode()}\t"}, SHOP),
        ({"x-api-key": KEY_OLD.decode()}, SHOP),
        ({"authorization": f"Bearer {KEY_B.decode()}"}, BANK),
    ],
    ids=["bearer", "scheme-lower", "spaces", "x-api-key", "x-api-key-spaces", "rotated", "other-tenant"],
)
def test_configured_key_gives_its_principal(headers: dict[str, str], principal: Principal) -> None:
    """A configured key, as a Bearer credential or in x-api-key, authenticates as its principal."""
    assert keys().authenticate(headers) == principal


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "no credentials"),
        ({"Authorization": f"Bearer {KEY_A.decode()}"}, "no credentials"),
        ({"authorization": ""}, "authorization header is empty"),
        ({"authorization": "Bearer"}, "has no credential"),
        ({"authorization": "Bearer   "}, "has no credential"),
        ({"authorization": f"Basic {KEY_A.decode()}"}, "scheme 'Basic' is not supported, only Bearer"),
        ({"authorization": KEY_A.decode()}, "authorization scheme is not supported, only Bearer"),
        ({"authorization": f"Bearer {KEY_A.decode()} extra"}, "malformed"),
        ({"authorization": "Bearer k\u00e9y-0123456789abcdef"}, "malformed"),
        ({"x-api-key": ""}, "has no credential"),
        ({"x-api-key": "key with spaces in it"}, "malformed"),
        ({"x-api-key": "x" * 8193}, "longer than 8192"),
        ({"x-api-key": KEY_A.decode(), "authorization": f"Bearer {KEY_A.decode()}"}, "both"),
    ],
    ids=[
        "none",
        "not-lower-case",
        "empty",
        "bearer-alone",
        "bearer-blank",
        "basic",
        "no-scheme",
        "two-words",
        "non-ascii",
        "empty-x-api-key",
        "spaces",
        "too-long",
        "both-headers",
    ],
)
def test_missing_or_malformed_key_is_refused(headers: dict[str, str], needle: str) -> None:
    """Headers without exactly one well-formed credential are refused, with a reason naming the fix."""
    reason = key_refusal(headers)
    assert needle in reason
    assert "send 'authorization: Bearer <key>' or 'x-api-key: <key>'" in reason or "both" in reason
    assert KEY_A.decode() not in reason


@pytest.mark.parametrize(
    "key",
    [
        "key-c-0123456789abcdef-shop",
        KEY_A.decode()[:-1],
        KEY_A.decode() + "x",
        KEY_A.decode().upper(),
        hashlib.sha256(KEY_A).hexdigest(),
    ],
    ids=["unknown", "truncated", "extended", "upper-case", "the-digest"],
)
def test_unknown_key_is_refused_without_echoing_it(key: str) -> None:
    """A well-formed key that is not configured is refused, and the reason does not repeat it."""
    reason = key_refusal({"x-api-key": key})
    assert "not recognised" in reason
    assert key not in reason


def test_revoked_key_is_refused_while_the_others_still_work() -> None:
    """Revoking = leaving the key out of the configured set: it is refused, the remaining keys are not."""
    after_revocation = ApiKeys([(KEY_A, SHOP), (KEY_B, BANK)])
    assert "unknown or revoked" in key_refusal({"x-api-key": KEY_OLD.decode()}, after_revocation)
    assert after_revocation.authenticate({"x-api-key": KEY_A.decode()}) == SHOP


def test_no_configured_keys_refuses_everything() -> None:
    """With no keys configured, every key is unknown."""
    assert "not recognised" in key_refusal({"x-api-key": KEY_A.decode()}, ApiKeys([]))


def test_every_digest_is_compared_without_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The presented key's digest is compared, in constant time, with every configured digest even
    after a match, so the time taken does not tell which key matched."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert keys().authenticate({"x-api-key": KEY_A.decode()}) == SHOP  # the first configured key
    assert len(calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize(
    "entries",
    [
        [(b"short-key", SHOP)],
        [(b"key with a space 0123456789", SHOP)],
        [(b"k\xc3\xa9y-0123456789abcdef", SHOP)],
        [(KEY_A, SHOP), (KEY_A, BANK)],
        [("key-as-text-0123456789abcdef", SHOP)],
        [(KEY_A, "shop")],
    ],
    ids=["short", "space", "non-ascii", "twice", "str-not-bytes", "not-a-principal"],
)
def test_bad_key_configuration_is_a_config_error(entries: list[tuple[Any, Any]]) -> None:
    """Keys too short to be secret, not sendable in a header, or configured twice are refused at load."""
    with pytest.raises(ConfigError):
        ApiKeys(entries)


# --- JWT (S6) ----------------------------------------------------------------------------------------


def test_valid_token_gives_its_claims_and_principal() -> None:
    """A token signed with the secret, for this audience and issuer, in its validity window is accepted."""
    claims = verifier().verify(make_jwt(), NOW)
    assert claims == valid_claims()
    assert principal_from_claims(claims) == Principal(
        key_id="client-7", tenant="shop", sources=("app://shop/*",), types=("com.shop.*",)
    )


def test_authenticate_reads_the_bearer_token() -> None:
    """JwtVerifier.authenticate takes the token from `authorization: Bearer` and gives the principal."""
    principal = verifier().authenticate({"authorization": f"Bearer {make_jwt()}"}, now=NOW)
    assert (principal.key_id, principal.tenant) == ("client-7", "shop")
    with pytest.raises(AuthError, match="no credentials"):
        verifier().authenticate({"x-api-key": make_jwt()}, now=NOW)
    with pytest.raises(AuthError, match="scheme 'Basic' is not supported, only Bearer: send 'authorization"):
        verifier().authenticate({"authorization": f"Basic {make_jwt()}"}, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none"},
        {"alg": "None", "typ": "JWT"},
        {"alg": "NONE"},
        {"alg": "nOnE"},
    ],
)
def test_alg_none_is_refused(header: dict[str, Any]) -> None:
    """An unsigned token (alg none, any spelling) is refused, with or without a signature."""
    head = b64url(json.dumps(header).encode())
    payload = b64url(json.dumps(valid_claims()).encode())
    assert "alg 'none' (unsigned) is refused" in jwt_refusal(f"{head}.{payload}.")
    assert "alg 'none'" in jwt_refusal(make_jwt(header=header))


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ({"alg": "HS512"}, "'HS512'"),
        ({"alg": "HS384"}, "'HS384'"),
        ({"alg": "RS256"}, "'RS256'"),
        ({"alg": "ES256"}, "'ES256'"),
        ({"alg": "hs256"}, "'hs256'"),
        ({"alg": "HS256 "}, "'HS256 '"),
        ({"alg": 256}, "256"),
        ({"alg": None}, "None"),
        ({"typ": "JWT"}, "None"),
    ],
    ids=["HS512", "HS384", "RS256", "ES256", "lower", "space", "number", "null", "missing"],
)
def test_other_algorithms_are_refused_by_name(header: dict[str, Any], shown: str) -> None:
    """Any alg but HS256 is refused with the alg named, even when the token is HMAC-signed."""
    assert f"alg {shown} is not accepted: only HS256" in jwt_refusal(make_jwt(header=header))


def test_crit_header_is_refused() -> None:
    """A token whose header demands extensions the gateway does not know is refused (RFC 7515 crit)."""
    assert "crit" in jwt_refusal(make_jwt(header={"alg": "HS256", "crit": ["exp"], "exp": 1}))


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (NOW + 300 - 1, True),
        (NOW + 300, True),
        (NOW + 300 + 29.9, True),
        (NOW + 300 + 30, False),
        (NOW + 10_000, False),
    ],
    ids=["before", "at-exp", "within-leeway", "leeway-ends", "long-after"],
)
def test_expiry_allows_the_leeway_and_no_more(now: float, accepted: bool) -> None:
    """A token is accepted until exp plus the leeway, then refused as expired."""
    if accepted:
        assert verifier().verify(make_jwt(), now)["sub"] == "client-7"
    else:
        assert "token expired at" in jwt_refusal(make_jwt(), now=now)


@pytest.mark.parametrize(
    ("nbf", "accepted"),
    [(NOW, True), (NOW + 30, True), (NOW + 31, False), (NOW + 3600, False)],
    ids=["now", "within-leeway", "just-beyond", "an-hour-ahead"],
)
def test_not_yet_valid_token_is_refused(nbf: float, accepted: bool) -> None:
    """A token whose nbf is later than now plus the leeway is refused."""
    token = make_jwt(nbf=nbf)
    if accepted:
        assert verifier().verify(token, NOW)["nbf"] == nbf
    else:
        assert "not valid before" in jwt_refusal(token)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"exp": "tomorrow"}, "exp 'tomorrow' is not a number"),
        ({"exp": True}, "exp True is not a number"),
        ({"exp": None}, "exp None is not a number"),
        ({"nbf": "now"}, "nbf 'now' is not a number"),
        ({"iat": [1]}, "iat [1] is not a number"),
        ({"exp": 1e300}, None),
    ],
    ids=["exp-text", "exp-bool", "exp-null", "nbf-text", "iat-list", "exp-far-future"],
)
def test_time_claims_must_be_numbers(overrides: dict[str, Any], needle: str | None) -> None:
    """exp, nbf and iat must be numbers of unix seconds; a far-future exp is just a long-lived token."""
    token = make_jwt(**overrides)
    if needle is None:
        assert verifier().verify(token, NOW)["exp"] == 1e300
    else:
        assert needle in jwt_refusal(token)


def test_token_without_exp_is_refused() -> None:
    """A token that never expires is refused: exp is required."""
    claims = valid_claims()
    del claims["exp"]
    assert "no exp claim" in jwt_refusal(make_jwt(claims))


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        (AUDIENCE, True),
        (["other", AUDIENCE], True),
        ("other-gateway", False),
        (["other", "another"], False),
        ([], False),
        ("BUS-GATEWAY", False),
        ("bus-gateway ", False),
        ([AUDIENCE, 5], False),
        (5, False),
        ({"aud": AUDIENCE}, False),
    ],
)
def test_audience_must_name_this_gateway(aud: Any, accepted: bool) -> None:
    """aud must be this gateway's audience, or a list of strings holding it."""
    token = make_jwt(aud=aud)
    if accepted:
        assert verifier().verify(token, NOW)["aud"] == aud
    else:
        assert "aud" in jwt_refusal(token)


def test_token_without_audience_is_refused() -> None:
    """A token with no aud could be meant for any service: refused."""
    claims = valid_claims()
    del claims["aud"]
    assert f"no aud claim: issue it with aud {AUDIENCE!r}" in jwt_refusal(make_jwt(claims))


@pytest.mark.parametrize("iss", ["https://evil.example", "", None, ["https://issuer.example"]])
def test_wrong_issuer_is_refused(iss: Any) -> None:
    """When an issuer is configured, a token from any other issuer (or none) is refused."""
    assert f"is not {ISSUER!r}" in jwt_refusal(make_jwt(iss=iss))


def test_missing_issuer_is_refused_when_one_is_configured() -> None:
    """A token without iss is refused by a verifier that expects one, and accepted by one that does not."""
    claims = valid_claims()
    del claims["iss"]
    assert "iss None" in jwt_refusal(make_jwt(claims))
    assert verifier(issuer=None).verify(make_jwt(claims), NOW)["sub"] == "client-7"


def test_bad_signature_is_refused() -> None:
    """A token signed with another secret is refused."""
    assert "signature does not match" in jwt_refusal(make_jwt(secret=OTHER_SECRET))


def tampered_payload() -> str:
    """A valid token whose payload is swapped for one naming another tenant, signature kept."""
    head, _, signature = make_jwt().split(".")
    forged = b64url(json.dumps({**valid_claims(), "tenant": "bank", "sources": []}).encode())
    return f"{head}.{forged}.{signature}"


def test_tampered_payload_is_refused() -> None:
    """Changing the claims after signing (here: another tenant, any source) breaks the signature."""
    assert "signature does not match" in jwt_refusal(tampered_payload())


@pytest.mark.parametrize("part", [0, 1, 2])
def test_one_character_change_in_any_segment_is_refused(part: int) -> None:
    """Changing one character of the header, payload or signature is refused."""
    token = make_jwt()
    for position in range(len(token.split(".")[part])):
        segments = token.split(".")
        text = segments[part]
        replacement = "A" if text[position] != "A" else "B"
        segments[part] = text[:position] + replacement + text[position + 1 :]
        with pytest.raises(AuthError):
            verifier().verify(".".join(segments), NOW)


VALID_TOKEN = make_jwt()
HEAD, PAYLOAD, SIGNATURE = VALID_TOKEN.split(".")
DUPLICATE_ALG = b64url(b'{"alg":"none","alg":"HS256"}')
NOT_UTF8 = b64url(b"\xff\xfe")
NAN_ALG = b64url(b'{"alg":NaN}')
DEEP = b64url(b"[" * 100 + b"]" * 100)


@pytest.mark.parametrize(
    ("token", "needle"),
    [
        ("", "token missing"),
        ("garbage", "not a JWT"),
        ("a.b", "not a JWT"),
        ("a.b.c.d", "not a JWT"),
        ("a.b.c.d.e", "encrypted (JWE)"),
        ("..", "header is empty"),
        (f"{HEAD}..{SIGNATURE}", "payload is empty"),
        (f"{HEAD}.{PAYLOAD}.", "signature is empty"),
        ("!!!.b.c", "not unpadded base64url"),
        (f"{HEAD}=.{PAYLOAD}.{SIGNATURE}", "not unpadded base64url"),
        (f"{HEAD}.{PAYLOAD}.{SIGNATURE}=", "not unpadded base64url"),
        (f"{HEAD[:-1]}.{PAYLOAD}.{SIGNATURE}", "header"),
        (f"{HEAD}.{PAYLOAD}.{SIGNATURE[:-1]}", "signature"),
        ("A.b.c", "not unpadded base64url"),
        (f"{HEAD}.{PAYLOAD}.{SIGNATURE[:-1]}B", "not canonical"),
        (f"{b64url(b'not json')}.{PAYLOAD}.{SIGNATURE}", "header is not valid JSON"),
        (f"{b64url(b'[1,2]')}.{PAYLOAD}.{SIGNATURE}", "header is not a JSON object"),
        (f"{DUPLICATE_ALG}.{PAYLOAD}.{SIGNATURE}", "header is not valid JSON"),
        (f"{NOT_UTF8}.{PAYLOAD}.{SIGNATURE}", "header is not valid JSON"),
        (f"{NAN_ALG}.{PAYLOAD}.{SIGNATURE}", "header is not valid JSON"),
        (f"{DEEP}.{PAYLOAD}.{SIGNATURE}", "header is not valid JSON"),
        (f"{HEAD}.{PAYLOAD}.{SIGNATURE}.", "not a JWT"),
        (f"{HEAD}.p\u00e1yload.{SIGNATURE}", "payload is not unpadded base64url"),
        (f"{HEAD}.\ud800.{SIGNATURE}", "payload is not unpadded base64url"),
        (VALID_TOKEN + "A" * 8192, "longer than 8192"),
        (f" {VALID_TOKEN}", "not unpadded base64url"),
    ],
    ids=lambda value: value if len(value) < 30 else None,
)
def test_garbage_token_is_refused(token: str, needle: str) -> None:
    """Text that is not a well-formed compact JWS is refused with the part named, never another error."""
    assert needle in jwt_refusal(token)


def signed_payload(payload: bytes) -> str:
    """A correctly signed HS256 token around an arbitrary payload segment."""
    payload_text = b64url(payload)
    signature = hmac.new(SECRET, f"{HEAD}.{payload_text}".encode(), hashlib.sha256).digest()
    return f"{HEAD}.{payload_text}.{b64url(signature)}"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"not json", "payload is not valid JSON"),
        (b'"a string"', "payload is not a JSON object"),
        (b"null", "payload is not a JSON object"),
        (b'{"exp": 1e999}', "payload is not valid JSON"),
        (b'{"sub": "a", "sub": "b"}', "payload is not valid JSON"),
    ],
)
def test_signed_but_unusable_payload_is_refused(payload: bytes, needle: str) -> None:
    """Even a correctly signed payload must be one JSON object, without duplicate claims."""
    assert needle in jwt_refusal(signed_payload(payload))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"sub": None}, "token sub None is not a non-empty string"),
        ({"sub": ""}, "token sub '' is not a non-empty string"),
        ({"tenant": None}, "token tenant None"),
        ({"tenant": 7}, "token tenant 7"),
        ({"sources": None}, "token sources None is not a list of non-empty glob strings"),
        ({"sources": "app://shop/*"}, "token sources 'app://shop/*' is not a list"),
        ({"types": [""]}, "token types [''] is not a list"),
        ({"types": [1]}, "token types [1] is not a list"),
        ({"rate": 0}, "token rate 0 is not a positive number"),
        ({"rate": "fast"}, "token rate 'fast'"),
        ({"rate": 5, "burst": 0}, "token burst 0"),
        ({"rate": 5, "burst": 2.5}, "token burst 2.5"),
        ({"burst": 5}, "token burst 5 is not an integer >= 1 with a rate"),
    ],
)
def test_claims_that_do_not_describe_a_principal_are_refused(overrides: dict[str, Any], needle: str) -> None:
    """principal_from_claims names the claim that is missing or of the wrong kind, and the fix."""
    with pytest.raises(AuthError) as caught:
        principal_from_claims({**valid_claims(), **overrides})
    assert needle in caught.value.reason


@pytest.mark.parametrize("claim", ["sub", "tenant", "sources", "types"])
def test_scope_claims_are_required(claim: str) -> None:
    """A token never grants a tenant or "any source/type" by leaving a claim out ([] is how to say any)."""
    claims = valid_claims()
    del claims[claim]
    with pytest.raises(AuthError, match=f"token {claim} None"):
        principal_from_claims(claims)


def test_empty_scopes_and_limits_come_from_the_claims() -> None:
    """`sources: []` and `types: []` mean any; `rate` and `burst` become the principal's limit."""
    principal = principal_from_claims(
        {**valid_claims(), "sources": [], "types": [], "rate": 2.5, "burst": 20}
    )
    assert (principal.sources, principal.types, principal.rate, principal.burst) == ((), (), 2.5, 20)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((b"short", AUDIENCE), {}),
        (("text-secret-0123456789abcdef-0123456789", AUDIENCE), {}),
        ((SECRET, ""), {}),
        ((SECRET, AUDIENCE), {"issuer": ""}),
        ((SECRET, AUDIENCE), {"leeway": -1.0}),
        ((SECRET, AUDIENCE), {"leeway": float("nan")}),
    ],
    ids=["short-secret", "str-secret", "no-audience", "empty-issuer", "negative-leeway", "nan-leeway"],
)
def test_bad_verifier_configuration_is_a_config_error(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A secret shorter than 32 bytes, an empty audience or issuer, or a bad leeway is refused at load."""
    with pytest.raises(ConfigError):
        JwtVerifier(*args, **kwargs)


def _fuzz_token(rng: random.Random) -> str:
    """One hostile token: random text, a mutated valid token, or a signed token with random claims."""
    alphabet = string.ascii_letters + string.digits + "-_.=+/ \t\x00\u00e9\ud800\U0001f600"
    kind = rng.randrange(4)
    if kind == 0:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
    if kind == 1:
        chars = list(make_jwt())
        for _ in range(rng.randrange(1, 6)):
            position = rng.randrange(len(chars))
            operation = rng.randrange(3)
            if operation == 0:
                chars[position] = rng.choice(alphabet)
            elif operation == 1:
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        return "".join(chars)
    values: list[Any] = [
        None,
        True,
        0,
        -1,
        NOW,
        NOW + 300,
        2**64,
        1e308,
        "",
        "x",
        AUDIENCE,
        ISSUER,
        [],
        [AUDIENCE],
        ["app://*"],
        [1, None],
        {},
        {"a": [1]},
    ]
    if kind == 2:
        claims = valid_claims()
        for name in rng.sample([*claims, "rate", "burst"], rng.randrange(1, 4)):
            if rng.random() < 0.2:
                claims.pop(name, None)
            else:
                claims[name] = rng.choice(values)
        return make_jwt(claims)
    header = {"alg": rng.choice(["HS256", "none", "HS512", "RS256", None, 5, ""])}
    if rng.random() < 0.3:
        header["crit"] = rng.choice(values)
    segments = [b64url(json.dumps(header).encode()), b64url(rng.randbytes(rng.randrange(0, 64)))]
    segments.append(b64url(rng.randbytes(rng.choice([0, 31, 32, 33]))))
    return ".".join(segments)


def test_fuzzed_tokens_only_ever_raise_auth_error() -> None:
    """Thousands of random, mutated and oddly-claimed tokens are either accepted or refused with
    AuthError: no other exception escapes verify or principal_from_claims."""
    rng = random.Random(20261123)
    jwt = verifier()
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(5000):
        token = _fuzz_token(rng)
        try:
            principal_from_claims(jwt.verify(token, NOW))
        except AuthError:
            outcomes["refused"] += 1
        else:
            outcomes["accepted"] += 1
    assert outcomes["refused"] > 4000


# --- authorize (S7) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "source", "type_", "field"),
    [
        (SHOP, "app://bank/accounts", "com.bank.transfer", "source"),
        (SHOP, "app://shop/orders", "com.bank.transfer", "type"),
        (SHOP, "app://bank/accounts", "com.shop.order", "source"),
        (BANK, "app://shop/orders", "com.shop.order", "source"),
        (BANK, "app://bank/accounts", "com.shop.order", "type"),
        (SHOP, "app://shopping/x", "com.shop.order", "source"),
        (SHOP, "app://shop", "com.shop.order", "source"),
        (SHOP, "APP://SHOP/orders", "com.shop.order", "source"),
        (SHOP, "app://shop/orders", "com.shopper.order", "type"),
    ],
    ids=[
        "a-on-b-both",
        "a-on-b-type",
        "a-on-b-source",
        "b-on-a",
        "b-on-a-type",
        "prefix-without-slash",
        "bare-prefix",
        "case",
        "type-prefix",
    ],
)
def test_other_tenants_sources_and_types_are_forbidden(
    principal: Principal, source: str, type_: str, field: str
) -> None:
    """A tenant's credentials on another tenant's source or type are forbidden, naming the field
    (source is checked first)."""
    with pytest.raises(ForbiddenError) as caught:
        authorize(principal, source=source, type=type_)
    assert caught.value.field == field
    assert principal.key_id in caught.value.reason
    assert principal.tenant in caught.value.reason


def test_forbidden_reason_names_what_is_allowed() -> None:
    """The 403 reason quotes the refused value and the globs the key may use."""
    with pytest.raises(ForbiddenError) as caught:
        authorize(SHOP, source="app://bank/accounts", type="com.shop.order")
    assert str(caught.value) == (
        "source: 'app://bank/accounts' is not allowed for key 'shop-1' of tenant 'shop' "
        "(allowed: 'app://shop/*'): publish within those or use a key scoped to it"
    )


@pytest.mark.parametrize(
    ("globs", "value", "allowed"),
    [
        ((), "anything://at/all", True),
        (("*",), "anything://at/all", True),
        (("*",), "", True),
        (("app://shop/*",), "app://shop/orders/eu/1", True),
        (("app://shop/*",), "app://shop/", True),
        (("app://shop/*",), "app://shop", False),
        (("app://*/orders",), "app://shop/eu/orders", True),
        (("app://*/orders",), "app://shop/orders/x", False),
        (("*shop*",), "app://shop/x", True),
        (("a*b*c",), "abc", True),
        (("a*b*c",), "acb", False),
        (("a*a",), "a", False),
        (("a*a",), "aa", True),
        (("a**b",), "ab", True),
        (("app://shop/?",), "app://shop/x", False),
        (("app://shop/?",), "app://shop/?", True),
        (("app://[ab]",), "app://a", False),
        (("app://[ab]",), "app://[ab]", True),
        (("exact",), "exact", True),
        (("exact",), "exactly", False),
        (("x", "app://shop/*"), "app://shop/y", True),
    ],
)
def test_source_globs(globs: tuple[str, ...], value: str, allowed: bool) -> None:
    """In a glob only `*` is special, matching any run of characters, `/` included; empty = any."""
    principal = Principal(key_id="k", tenant="t", sources=globs)
    if allowed:
        authorize(principal, source=value, type="any.type")
    else:
        with pytest.raises(ForbiddenError, match=r"^source: "):
            authorize(principal, source=value, type="any.type")


def test_glob_matching_has_no_backtracking_blowup() -> None:
    """Many stars against a long near-miss finish at once (no exponential backtracking)."""
    principal = Principal(key_id="k", tenant="t", types=("a*" * 50 + "b",))
    with pytest.raises(ForbiddenError):
        authorize(principal, source="s", type="a" * 10_000)


def test_jwt_principal_is_scoped_like_a_key() -> None:
    """A principal from a token is held to its sources and types like one from an API key."""
    principal = principal_from_claims(verifier().verify(make_jwt(), NOW))
    authorize(principal, source="app://shop/orders", type="com.shop.order")
    with pytest.raises(ForbiddenError) as caught:
        authorize(principal, source="app://bank/x", type="com.shop.order")
    assert caught.value.field == "source"


@pytest.mark.parametrize(
    ("source", "type_", "field"),
    [
        ("app://shop/web", "bus.function.result", "type"),
        ("app://shop/web", "bus.timer.fired", "type"),
        ("bus://bus/functions/pay", "order.placed", "source"),
    ],
)
def test_platform_names_need_an_explicit_grant(source: str, type_: str, field: str) -> None:
    """The platform's namespace is refused to a key without scopes and with authentication off;
    `*` alone grants nothing, a glob naming the namespace does."""
    open_key = Principal(key_id="open", tenant="shop")
    star = Principal(key_id="star", tenant="shop", sources=("*",), types=("*",))
    for principal in (open_key, star, None):
        with pytest.raises(ForbiddenError) as caught:
            authorize(principal, source=source, type=type_)
        assert caught.value.field == field
        assert "published by bus itself" in caught.value.reason
    relay = Principal(
        key_id="relay", tenant="shop", sources=("bus://*", "app://*"), types=("bus.*", "order.*")
    )
    authorize(relay, source=source, type=type_)


def test_an_endpoints_own_platform_type_is_allowed() -> None:
    """The invoke endpoint names `bus.function.invoked` itself: a caller may send it, not other ones."""
    authorize(
        None, source="/functions/f/invoke", type="bus.function.invoked", own_types=("bus.function.invoked",)
    )
    with pytest.raises(ForbiddenError):
        authorize(
            None, source="bus://bus/x", type="bus.function.invoked", own_types=("bus.function.invoked",)
        )


def test_platform_refusal_reads_as_a_fix() -> None:
    """The reason quotes the value and says what to do, for a key and with authentication off."""
    with pytest.raises(ForbiddenError) as caught:
        authorize(Principal(key_id="open", tenant="shop"), source="app://x", type="bus.timer.fired")
    assert str(caught.value) == (
        "type: 'bus.timer.fired' is in the platform's namespace (types starting 'bus.' are published "
        "by bus itself): use a type of your own, or give key 'open' a type glob starting 'bus.'"
    )
    with pytest.raises(ForbiddenError) as caught:
        authorize(None, source="app://x", type="bus.timer.fired")
    assert "or turn on authentication and give the relaying key a type glob starting 'bus.'" in str(
        caught.value
    )
