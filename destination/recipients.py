"""Recipients: who a request goes to, the documented default, and the opt-ins.

A mapping names its recipient (``message.to``, legacy ``recipient``, a profile
merge's ``user_id``); when it does not, the request goes to the event's
``userId``, else its ``anonymousId``. Client-side sources let anyone put any
address or list id into an event, so taking an email or phone number from the
event, and sending to a Courier list or audience at all, are off unless the
mapping opts in (``allow_event_contacts``, ``allow_lists``).
"""

from __future__ import annotations

from collections import abc
from typing import Any

from destination.directives import is_blank
from destination.event_path import MISSING
from destination.mapping_file import JsonPath
from destination.templates import Report, is_directive

CONTACT_KEYS = ("email", "phone_number")
LIST_KEYS = ("list_id", "list_pattern", "audience_id")

_RISK = "client-side sources let anyone put any address into an event"


def check_opt_ins(
    path: JsonPath,
    entry: dict[str, Any],
    report: Report,
    *,
    contacts: bool,
    lists: bool,
) -> None:
    """Report addresses and lists a mapping takes from the event without opting in.

    Checked on the file's values: a directive is a value from the event, a
    plain value is the operator's own choice.
    """
    for where, holder in _address_holders(path, entry):
        if is_directive(holder) and not contacts:
            message = (
                f"{where[-1]} comes whole from the event, so the event chooses the "
                f"address; {_RISK}. Name the fields, or set allow_event_contacts: true"
            )
            report(where, message)
            continue
        if not isinstance(holder, dict):
            continue
        for key in CONTACT_KEYS:
            if key in holder and is_directive(holder[key]) and not contacts:
                message = (
                    f"{key} comes from the event; {_RISK}. Write a fixed value, or "
                    "set allow_event_contacts: true on this mapping"
                )
                report((*where, key), message)
        for key in LIST_KEYS:
            if key in holder and not lists:
                message = (
                    f"sending to a Courier list or audience ({key}) is off by "
                    "default; set allow_lists: true on this mapping to send to one"
                )
                report((*where, key), message)


def _address_holders(
    path: JsonPath, entry: dict[str, Any]
) -> list[tuple[JsonPath, Any]]:
    """Where a mapping's addresses live: ``to`` (each item), or a profile."""
    send = entry.get("send")
    if isinstance(entry.get("profile"), dict):
        return [((*path, "profile", "profile"), entry["profile"].get("profile"))]
    if isinstance(send, dict) and isinstance(send.get("message"), dict):
        to = send["message"].get("to")
        where: JsonPath = (*path, "send", "message", "to")
        if isinstance(to, list):
            return [((*where, index), item) for index, item in enumerate(to)]
        return [] if to is None else [(where, to)]
    if isinstance(send, dict) and "profile" in send:
        return [((*path, "send", "profile"), send["profile"])]
    return []


def default_recipient(event: abc.Mapping[str, Any]) -> Any:
    """The documented default: ``userId``, else ``anonymousId``, else MISSING."""
    for key in ("userId", "anonymousId"):
        value = event.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return MISSING


def with_default_recipient(
    template: dict[str, Any], body: dict[str, Any], event: abc.Mapping[str, Any]
) -> dict[str, Any]:
    """``body`` with the default recipient where the template names none."""
    default = default_recipient(event)
    if default is MISSING:
        return body
    if "message" in template and "to" not in template["message"]:
        return {**body, "message": {"to": {"user_id": default}, **body["message"]}}
    if "message" not in template and "recipient" not in template:
        pairs = list(body.items())
        at = next((i + 1 for i, (key, _) in enumerate(pairs) if key == "event"), 0)
        return dict([*pairs[:at], ("recipient", default), *pairs[at:]])
    return body


def usable_user_id(value: Any) -> str | None:
    """A profile id: a non-blank string, or an integer with every digit."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def names_a_list(body: dict[str, Any]) -> bool:
    """Whether a rendered ``message.to`` names a list or an audience."""
    message = body.get("message")
    to = message.get("to") if isinstance(message, dict) else None
    addresses = to if isinstance(to, list) else [to]
    return any(
        isinstance(address, dict) and any(key in address for key in LIST_KEYS)
        for address in addresses
    )


def has_recipient(body: dict[str, Any]) -> bool:
    """Whether a rendered send body has someone to send to."""
    if "message" in body:
        message = body["message"]
        return isinstance(message, dict) and _is_address(message.get("to", MISSING))
    return not is_blank(body.get("recipient", MISSING))


def _is_address(to: Any) -> bool:
    """Courier's ``message.to``: an object with a usable value, or a list of them."""
    if isinstance(to, dict):
        return any(not is_blank(value) for value in to.values())
    if isinstance(to, list):
        return any(_is_address(item) for item in to)
    return not is_blank(to)
