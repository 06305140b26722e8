"""Request authentication on the raw body bytes, before anything is parsed.

Segment signs webhooks with HMAC-SHA1 under the shared secret, as lowercase hex:

- ``X-Signature``: of the whole body when it is one object, but of the raw
  bytes of the *first element* when the body is a JSON array. The other
  elements of such a batch are not covered: anyone who captured one signed
  batch can append events to it. This is Segment's scheme, not ours to fix.
- ``X-Segment-Signature`` (Segment's newer option): of the whole body, which
  closes that gap. When both headers are present, it alone decides.

Signatures are compared on bytes, never on re-serialised JSON: no two JSON
encoders agree on spacing, escapes or number forms. Several secrets may be
configured so that one can be rotated without rejecting requests meanwhile.
A request with no signature may instead carry ``DESTINATION_TOKEN`` as a
bearer token or as the password of basic auth.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from destination.errors import RequestError

_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Who may post events: shared secrets, a token, or anyone when allowed."""

    secrets: tuple[str, ...] = ()
    token: str | None = None
    allow_unsigned: bool = False


def sign(secret: str, data: bytes) -> str:
    """The lowercase hex HMAC-SHA1 a CDP puts in its signature header."""
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha1).hexdigest()


def first_element_bytes(body: bytes) -> bytes | None:
    """The raw bytes of a JSON array's first element, or None if not an array."""
    start = _skip_whitespace(body, 0)
    if start >= len(body) or body[start : start + 1] != b"[":
        return None
    first = _skip_whitespace(body, start + 1)
    end = _scan_value(body, first)
    if end is None or end == first:
        return None
    return body[first:end]


def _skip_whitespace(data: bytes, position: int) -> int:
    while position < len(data) and data[position] in _WHITESPACE:
        position += 1
    return position


def _scan_value(data: bytes, position: int) -> int | None:
    """Where the JSON value starting at ``position`` ends, without parsing it."""
    if position >= len(data):
        return None
    opener = data[position]
    if opener == ord('"'):
        return _scan_string(data, position)
    if opener not in b"{[":
        # A number or a literal runs until a delimiter; none means truncated.
        end = position
        while end < len(data) and data[end] not in b",]}" + _WHITESPACE:
            end += 1
        return end if end < len(data) else None
    depth = 0
    index = position
    while index < len(data):
        byte = data[index]
        if byte == ord('"'):
            string_end = _scan_string(data, index)
            if string_end is None:
                return None
            index = string_end
            continue
        if byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


def _scan_string(data: bytes, position: int) -> int | None:
    index = position + 1
    while index < len(data):
        byte = data[index]
        if byte == ord("\\"):
            index += 2
            continue
        if byte == ord('"'):
            return index + 1
        index += 1
    return None


def authenticate(body: bytes, headers: Mapping[str, str], config: AuthConfig) -> str:
    """Check the request and name the scheme that matched; raise 401 otherwise."""
    segment_signature = headers.get("X-Segment-Signature")
    signature = headers.get("X-Signature")
    if config.secrets and segment_signature is not None:
        if _matches(segment_signature, body, config.secrets):
            return "x-segment-signature"
        raise _unauthorized(
            "X-Segment-Signature does not match the HMAC-SHA1 of the body under any "
            "configured shared secret; check DESTINATION_SHARED_SECRET.",
            "bad_signature",
        )
    if config.secrets and signature is not None:
        return _check_x_signature(body, signature, config.secrets)

    if config.token is not None and "Authorization" in headers:
        if _token_matches(headers["Authorization"], config.token):
            return "token"
        raise _unauthorized(
            "The Authorization header does not carry DESTINATION_TOKEN as a bearer "
            "token or as the basic-auth password.",
            "bad_token",
        )
    if config.allow_unsigned:
        return "unsigned"
    raise _unauthorized(_missing_credentials_reason(config), "missing_credentials")


def _check_x_signature(body: bytes, signature: str, secrets: Sequence[str]) -> str:
    if _matches(signature, body, secrets):
        return "x-signature:body"
    first = first_element_bytes(body)
    if first is not None and _matches(signature, first, secrets):
        return "x-signature:first-element"
    raise _unauthorized(
        "X-Signature matches neither the HMAC-SHA1 of the body nor that of the "
        "first element of its array under any configured shared secret; check "
        "DESTINATION_SHARED_SECRET.",
        "bad_signature",
    )


def _matches(claimed: str, data: bytes, secrets: Sequence[str]) -> bool:
    claimed_bytes = claimed.strip().lower().encode("ascii", "replace")  # never raises
    results = [
        hmac.compare_digest(sign(secret, data).encode("ascii"), claimed_bytes)
        for secret in secrets
    ]
    return any(results)


def _token_matches(header: str, token: str) -> bool:
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        offered = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        offered = decoded.partition(":")[2]
    else:
        return False
    # aiohttp keeps undecodable header bytes as surrogates; encode them back
    # to those bytes rather than fail: they simply do not match.
    offered_bytes = offered.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(offered_bytes, token.encode("utf-8"))


def _missing_credentials_reason(config: AuthConfig) -> str:
    if config.secrets and config.token:
        return (
            "The request has no X-Signature, X-Segment-Signature or Authorization "
            "header; sign it with the shared secret or send the token."
        )
    if config.secrets:
        return (
            "The request has no X-Signature or X-Segment-Signature header; set the "
            "same shared secret in your CDP's webhook settings."
        )
    return (
        "The request has no Authorization header; send DESTINATION_TOKEN as a "
        "bearer token or as the basic-auth password."
    )


def _unauthorized(reason: str, code: str) -> RequestError:
    return RequestError(401, reason, code=code)
