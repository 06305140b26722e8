"""Tests for destination.signature: HMAC signing, first-element slicing, auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from multidict import CIMultiDict

from destination.errors import RequestError
from destination.signature import AuthConfig, authenticate, first_element_bytes, sign

SECRET = "whsec-test"
OLD_SECRET = "whsec-old"
TOKEN = "token-test"


def make_event(message_id: str = "m-0001", **changes: Any) -> dict[str, Any]:
    """Return CASES.md's E(m) with the given fields replaced."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": "user-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"orderId": "o-1"},
    }
    event.update(changes)
    return event


def compact(value: Any) -> bytes:
    """JSON as JavaScript's JSON.stringify writes it: no spaces, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def basic(user: str, password: str) -> str:
    credentials = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def refusal(body: bytes, headers: dict[str, str], config: AuthConfig) -> RequestError:
    with pytest.raises(RequestError) as caught:
        authenticate(body, headers, config)
    return caught.value


BATCH = [make_event("m-b1"), make_event("m-b2")]
BATCH_BODY = compact(BATCH)
FIRST_BYTES = compact(BATCH[0])
ALTERED_BODY = compact([BATCH[0], make_event("m-b2", properties={"orderId": "o-2"})])
SIGNED = AuthConfig(secrets=(SECRET,))


# sign


def test_sign_is_lowercase_hex_hmac_sha1() -> None:
    """sign() is the lowercase hex HMAC-SHA1 of the bytes under the secret."""
    data = b'{"a":1}'

    signature = sign(SECRET, data)

    expected = hmac.new(SECRET.encode(), data, hashlib.sha1).hexdigest()
    assert signature == expected
    assert signature == signature.lower()
    assert len(signature) == 40


def test_sign_encodes_a_non_ascii_secret_as_utf8() -> None:
    """A non-ASCII secret is used as its UTF-8 bytes."""
    secret = "sécret"

    signature = sign(secret, b"x")

    assert signature == hmac.new(secret.encode(), b"x", hashlib.sha1).hexdigest()


# first_element_bytes


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'[{"a":1},{"b":2}]', b'{"a":1}', id="compact"),
        pytest.param(
            b' \r\n\t[ \n {"a": 1} ,\n {"b":2} ]\n', b'{"a": 1}', id="whitespace"
        ),
        pytest.param(b'[{"a":1}]', b'{"a":1}', id="single-element"),
        pytest.param(
            b'[{"a":[1,[2,{"b":{}}]],"c":{"d":[]}},3]',
            b'{"a":[1,[2,{"b":{}}]],"c":{"d":[]}}',
            id="nested-object",
        ),
        pytest.param(b"[[1,[2]],[3]]", b"[1,[2]]", id="nested-array"),
        pytest.param(
            b'[{"a":"]}[{"},{"b":2}]', b'{"a":"]}[{"}', id="brackets-in-string"
        ),
        pytest.param(
            b'[{"a":"say \\"]\\" now"},2]',
            b'{"a":"say \\"]\\" now"}',
            id="escaped-quotes",
        ),
        pytest.param(
            b'[{"a":"ends in backslash\\\\"},2]',
            b'{"a":"ends in backslash\\\\"}',
            id="escaped-backslash-before-quote",
        ),
        pytest.param(b'["a,b]",2]', b'"a,b]"', id="string-element"),
        pytest.param(b"[12.5e3,2]", b"12.5e3", id="number-element"),
        pytest.param(b"[-1]", b"-1", id="negative-number"),
        pytest.param(b"[ true , false]", b"true", id="true-literal"),
        pytest.param(b"[null]", b"null", id="null-literal"),
        pytest.param(
            '[{"name":"Zoë ✓"},2]'.encode(),
            '{"name":"Zoë ✓"}'.encode(),
            id="non-ascii-bytes-kept-raw",
        ),
    ],
)
def test_first_element_bytes_slices_the_raw_first_element(
    body: bytes, expected: bytes
) -> None:
    """The first element is returned as the exact bytes the sender wrote."""
    first = first_element_bytes(body)

    assert first == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty-body"),
        pytest.param(b"   \n", id="only-whitespace"),
        pytest.param(b'{"a":[1,2]}', id="object"),
        pytest.param(b'"[1]"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"[]", id="empty-array"),
        pytest.param(b"[ \n ]", id="empty-array-with-whitespace"),
        pytest.param(b"[", id="only-opening-bracket"),
        pytest.param(b"[  ", id="opening-bracket-and-whitespace"),
        pytest.param(b'[{"a":1', id="truncated-object"),
        pytest.param(b"[[1,2", id="truncated-array"),
        pytest.param(b'["abc', id="truncated-string"),
        pytest.param(b'["abc\\"]', id="truncated-after-escaped-quote"),
        pytest.param(b'[{"a":"}"', id="truncated-with-closer-in-string"),
    ],
)
def test_first_element_bytes_is_none_without_a_complete_first_element(
    body: bytes,
) -> None:
    """A body that is not an array, or whose first element is cut off, gives None."""
    first = first_element_bytes(body)

    assert first is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[123", id="number"),
        pytest.param(b"[tru", id="literal"),
    ],
)
def test_first_element_bytes_is_none_for_a_truncated_scalar(body: bytes) -> None:
    """A scalar first element cut off by the end of input gives None."""
    first = first_element_bytes(body)

    assert first is None


# authenticate: signatures


def test_x_signature_over_the_whole_body_is_accepted() -> None:
    """X-Signature of the whole body of one event matches the body scheme."""
    body = compact(make_event())

    scheme = authenticate(body, {"X-Signature": sign(SECRET, body)}, SIGNED)

    assert scheme == "x-signature:body"


def test_x_signature_over_a_whole_array_is_accepted() -> None:
    """X-Signature of a whole array body also matches, as the body scheme."""
    headers = {"X-Signature": sign(SECRET, BATCH_BODY)}

    scheme = authenticate(BATCH_BODY, headers, SIGNED)

    assert scheme == "x-signature:body"


def test_x_signature_is_checked_on_raw_bytes_not_reserialised_json() -> None:
    """S2: spacing and non-ASCII bytes the sender chose are what is signed."""
    first = '{ "name" : "Zoë", "n" : 1.0 }'.encode()
    body = b"[ " + first + b' , {"b":2} ]'
    headers = {"X-Signature": sign(SECRET, first)}

    scheme = authenticate(body, headers, SIGNED)

    assert scheme == "x-signature:first-element"


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        pytest.param(
            BATCH_BODY,
            {"X-Signature": sign(SECRET, FIRST_BYTES)},
            "x-signature:first-element",
            id="a-x-signature-of-first-element",
        ),
        pytest.param(
            BATCH_BODY,
            {"X-Segment-Signature": sign(SECRET, BATCH_BODY)},
            "x-segment-signature",
            id="b-x-segment-signature-of-body",
        ),
        pytest.param(
            ALTERED_BODY,
            {"X-Signature": sign(SECRET, FIRST_BYTES)},
            "x-signature:first-element",
            id="c-second-event-altered-is-unseen",
        ),
    ],
)
def test_s1_accepted_cases(body: bytes, headers: dict[str, str], expected: str) -> None:
    """S1 (a)-(c): each scheme Segment uses is accepted and named."""
    scheme = authenticate(body, headers, SIGNED)

    assert scheme == expected


def test_s1_d_x_segment_signature_sees_an_altered_second_event() -> None:
    """S1 (d): X-Segment-Signature of the body fails once any event changes."""
    headers = {"X-Segment-Signature": sign(SECRET, BATCH_BODY)}

    error = refusal(ALTERED_BODY, headers, SIGNED)

    assert (error.status, error.code) == (401, "bad_signature")
    assert "X-Segment-Signature" in error.reason


@pytest.mark.parametrize(
    "x_signature",
    [
        pytest.param(sign(SECRET, BATCH_BODY), id="x-signature-of-body"),
        pytest.param(sign(SECRET, FIRST_BYTES), id="x-signature-of-first-element"),
    ],
)
def test_x_segment_signature_decides_when_both_headers_are_present(
    x_signature: str,
) -> None:
    """A wrong X-Segment-Signature is refused even if X-Signature would match."""
    headers = {"X-Segment-Signature": "0" * 40, "X-Signature": x_signature}

    error = refusal(BATCH_BODY, headers, SIGNED)

    assert (error.status, error.code) == (401, "bad_signature")


def test_x_segment_signature_wins_over_a_wrong_x_signature() -> None:
    """A matching X-Segment-Signature is accepted whatever X-Signature says."""
    headers = {
        "X-Segment-Signature": sign(SECRET, BATCH_BODY),
        "X-Signature": "0" * 40,
    }

    scheme = authenticate(BATCH_BODY, headers, SIGNED)

    assert scheme == "x-segment-signature"


@pytest.mark.parametrize(
    "secret",
    [pytest.param(SECRET, id="new-secret"), pytest.param(OLD_SECRET, id="old-secret")],
)
@pytest.mark.parametrize(
    "header", [pytest.param("X-Signature"), pytest.param("X-Segment-Signature")]
)
def test_either_of_two_secrets_is_accepted_during_rotation(
    secret: str, header: str
) -> None:
    """With two secrets configured, a signature under either one is accepted."""
    body = compact(make_event())
    config = AuthConfig(secrets=(SECRET, OLD_SECRET))

    scheme = authenticate(body, {header: sign(secret, body)}, config)

    assert scheme.startswith(header.lower())


def test_a_secret_no_longer_configured_is_refused() -> None:
    """After rotation, a signature under the removed secret is refused."""
    body = compact(make_event())

    error = refusal(body, {"X-Signature": sign(OLD_SECRET, body)}, SIGNED)

    assert (error.status, error.code) == (401, "bad_signature")


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(str.upper, id="uppercase"),
        pytest.param(lambda s: f"  {s}\t", id="surrounding-whitespace"),
    ],
)
def test_signature_hex_is_compared_case_and_space_insensitively(
    transform: Any,
) -> None:
    """Uppercase hex and padding around the signature are accepted."""
    body = compact(make_event())
    headers = {"X-Signature": transform(sign(SECRET, body))}

    scheme = authenticate(body, headers, SIGNED)

    assert scheme == "x-signature:body"


def test_header_names_are_case_insensitive_in_aiohttp_headers() -> None:
    """Lower-case header names work with the multidict aiohttp passes in."""
    body = compact(make_event())
    headers = CIMultiDict({"x-signature": sign(SECRET, body)})

    scheme = authenticate(body, headers, SIGNED)

    assert scheme == "x-signature:body"


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("0" * 40, id="wrong-hex"),
        pytest.param("", id="empty"),
        pytest.param("not hex at all", id="not-hex"),
        pytest.param("sha1=" + sign(SECRET, b"x"), id="prefixed"),
        pytest.param("é" * 40, id="non-ascii"),
    ],
)
def test_wrong_x_signature_is_refused(signature: str) -> None:
    """An X-Signature matching neither body nor first element is a 401."""
    error = refusal(BATCH_BODY, {"X-Signature": signature}, SIGNED)

    assert (error.status, error.code) == (401, "bad_signature")
    assert "X-Signature" in error.reason


def test_wrong_signature_is_refused_even_with_a_valid_token() -> None:
    """A bad signature is not rescued by a correct bearer token."""
    config = AuthConfig(secrets=(SECRET,), token=TOKEN)
    headers = {"X-Signature": "0" * 40, "Authorization": f"Bearer {TOKEN}"}

    error = refusal(BATCH_BODY, headers, config)

    assert (error.status, error.code) == (401, "bad_signature")


def test_wrong_signature_is_refused_even_when_unsigned_is_allowed() -> None:
    """allow_unsigned accepts missing credentials, not wrong ones."""
    config = AuthConfig(secrets=(SECRET,), allow_unsigned=True)

    error = refusal(BATCH_BODY, {"X-Signature": "0" * 40}, config)

    assert (error.status, error.code) == (401, "bad_signature")


# authenticate: tokens


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {TOKEN}", id="bearer"),
        pytest.param(f"bearer  {TOKEN} ", id="bearer-lowercase-spaces"),
        pytest.param(basic("segment", TOKEN), id="basic"),
        pytest.param(basic("", TOKEN), id="basic-empty-user"),
        pytest.param(basic("u", TOKEN).replace("Basic", "basic"), id="basic-lower"),
    ],
)
def test_token_is_accepted_as_bearer_or_basic_password(authorization: str) -> None:
    """DESTINATION_TOKEN works as a bearer token or as the basic-auth password."""
    config = AuthConfig(token=TOKEN)

    scheme = authenticate(b"{}", {"Authorization": authorization}, config)

    assert scheme == "token"


def test_token_is_accepted_alongside_secrets_when_unsigned() -> None:
    """With both configured, a request with only the token is accepted."""
    config = AuthConfig(secrets=(SECRET,), token=TOKEN)

    scheme = authenticate(b"{}", {"Authorization": f"Bearer {TOKEN}"}, config)

    assert scheme == "token"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer wrong", id="wrong-bearer"),
        pytest.param("Bearer", id="bearer-without-token"),
        pytest.param(TOKEN, id="no-scheme"),
        pytest.param(f"Token {TOKEN}", id="unknown-scheme"),
        pytest.param(basic(TOKEN, ""), id="token-as-basic-user"),
        pytest.param(basic("u", "wrong"), id="wrong-basic-password"),
        pytest.param("Basic !!!not-base64!!!", id="malformed-basic-base64"),
        pytest.param("Basic " + TOKEN, id="basic-not-base64-padded"),
        pytest.param(
            "Basic " + base64.b64encode(b"u:\xff\xfe").decode(), id="basic-not-utf8"
        ),
        pytest.param("Basic", id="basic-without-credentials"),
    ],
)
def test_wrong_or_malformed_token_is_refused(authorization: str) -> None:
    """Any Authorization header not carrying the token is a 401 bad_token."""
    config = AuthConfig(token=TOKEN)

    error = refusal(b"{}", {"Authorization": authorization}, config)

    assert (error.status, error.code) == (401, "bad_token")
    assert "Authorization" in error.reason


# authenticate: missing credentials


@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        pytest.param(
            AuthConfig(secrets=(SECRET,)),
            ["X-Signature", "X-Segment-Signature", "shared secret"],
            id="secrets-only",
        ),
        pytest.param(
            AuthConfig(token=TOKEN),
            ["Authorization", "DESTINATION_TOKEN"],
            id="token-only",
        ),
        pytest.param(
            AuthConfig(secrets=(SECRET,), token=TOKEN),
            ["X-Signature", "X-Segment-Signature", "Authorization", "token"],
            id="secrets-and-token",
        ),
    ],
)
def test_missing_credentials_message_fits_the_configuration(
    config: AuthConfig, mentions: list[str]
) -> None:
    """A request without credentials gets a 401 naming what it should send."""
    error = refusal(b"{}", {"Content-Type": "application/json"}, config)

    assert (error.status, error.code) == (401, "missing_credentials")
    for mention in mentions:
        assert mention in error.reason


def test_secrets_only_message_does_not_offer_a_token() -> None:
    """Without a token configured, the message does not suggest sending one."""
    error = refusal(b"{}", {}, AuthConfig(secrets=(SECRET,)))

    assert "Authorization" not in error.reason


def test_authorization_is_ignored_when_no_token_is_configured() -> None:
    """With only secrets configured, an Authorization header is not credentials."""
    headers = {"Authorization": f"Bearer {TOKEN}"}

    error = refusal(b"{}", headers, AuthConfig(secrets=(SECRET,)))

    assert error.code == "missing_credentials"


def test_signature_is_ignored_when_no_secret_is_configured() -> None:
    """With only a token configured, a signature header is not credentials."""
    body = b"{}"
    headers = {"X-Signature": sign(SECRET, body)}

    error = refusal(body, headers, AuthConfig(token=TOKEN))

    assert error.code == "missing_credentials"


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(AuthConfig(allow_unsigned=True), id="nothing-configured"),
        pytest.param(
            AuthConfig(secrets=(SECRET,), token=TOKEN, allow_unsigned=True),
            id="secrets-and-token-configured",
        ),
    ],
)
def test_allow_unsigned_accepts_a_request_without_credentials(
    config: AuthConfig,
) -> None:
    """allow_unsigned lets a request with no credentials through as unsigned."""
    scheme = authenticate(b"{}", {}, config)

    assert scheme == "unsigned"


def test_nothing_configured_and_unsigned_not_allowed_is_refused() -> None:
    """An empty configuration without allow_unsigned refuses every request."""
    error = refusal(b"{}", {}, AuthConfig())

    assert (error.status, error.code) == (401, "missing_credentials")
