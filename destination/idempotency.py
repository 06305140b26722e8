"""Idempotency keys and payload hashes.

The key of a send is derived only from what the CDP gave us and what the
operator chose, never from anything generated on arrival, so the same event
yields the same key across retries, restarts, instances and replays::

    key = "dst1-" + sha256(json([source_id, messageId, mapping, generation]))[:40]

``json`` is compact JSON with non-ASCII kept as UTF-8; the hex digest is cut
to 40 characters (160 bits), so a key is 45 ASCII characters. ``dst1`` names
the format: a future format takes a new prefix instead of changing this one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_PREFIX = "dst1-"

# Fields a CDP rewrites on every delivery attempt; they never make two
# deliveries of one event "different".
TRANSPORT_FIELDS = frozenset({"sentAt", "receivedAt", "integrations"})


def derive_idempotency_key(
    source_id: str, message_id: str, mapping: str, generation: int = 0
) -> str:
    """The Idempotency-Key sent with every attempt of one (event, mapping) pair."""
    material = encode_json([source_id, message_id, mapping, generation])
    digest = hashlib.sha256(material).hexdigest()
    return KEY_PREFIX + digest[:40]


def encode_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON, the same bytes for the same value every time.

    JSON text may carry a lone surrogate (``"\\ud800"``) that UTF-8 cannot
    encode; such a value is written with ASCII escapes instead, which is
    still valid JSON and still deterministic.
    """
    text = json.dumps(
        value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode()


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact UTF-8 JSON: equal values give equal bytes."""
    return encode_json(value, sort_keys=True)


def hash_payload(event: Mapping[str, Any]) -> str:
    """The hash that tells a redelivery from a different event reusing a messageId."""
    kept = {k: v for k, v in event.items() if k not in TRANSPORT_FIELDS}
    return hashlib.sha256(canonical_json(kept)).hexdigest()


def hash_body(body: bytes) -> str:
    """The hash of a rendered request body, kept with its key."""
    return hashlib.sha256(body).hexdigest()
