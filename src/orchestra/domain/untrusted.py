"""Bounds for data nobody vouches for: agent output and request bodies.

JSON from an agent or a client may be nested deep enough to exhaust the
recursion limit somewhere later (the decoder, ``orjson`` when it is stored,
pydantic) and may hold strings that cannot be encoded as UTF-8 (a lone
surrogate sent as ``"\\ud800"``). These helpers reject both early, in linear
time and without recursion, so the failure is a clear message at the edge
instead of a traceback in the middle.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator

#: Nesting allowed in JSON an agent writes (a review is 3 deep).
AGENT_JSON_DEPTH = 64
#: Characters of agent output searched or parsed as JSON; beyond it the answer is plain text.
AGENT_JSON_CHARS = 1_000_000
#: Nesting allowed in a request body (the deepest real body is about 5).
REQUEST_JSON_DEPTH = 32


class UntrustedJSON(ValueError):
    """JSON refused by a bound (too large, too deep, not JSON); the message says which."""


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts more than ``limit`` levels (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads_bounded(
    text: str, *, max_chars: int = AGENT_JSON_CHARS, max_depth: int = AGENT_JSON_DEPTH
) -> Any:
    """``json.loads`` within bounds, raising only :class:`UntrustedJSON`."""
    if len(text) > max_chars:
        raise UntrustedJSON(f"JSON longer than {max_chars} characters")
    try:
        value = json.loads(text)
    except RecursionError:
        raise UntrustedJSON(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise UntrustedJSON(f"not JSON: {exc}") from None
    if too_deep(value, max_depth):
        raise UntrustedJSON(f"JSON nested deeper than {max_depth} levels")
    return value


def raw_decode_bounded(
    decoder: json.JSONDecoder, text: str, start: int, *, max_depth: int = AGENT_JSON_DEPTH
) -> Any:
    """The JSON value at ``text[start]`` within the depth bound, else :class:`UntrustedJSON`."""
    try:
        value, _ = decoder.raw_decode(text, start)
    except RecursionError:
        raise UntrustedJSON(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise UntrustedJSON(f"not JSON: {exc}") from None
    if too_deep(value, max_depth):
        raise UntrustedJSON(f"JSON nested deeper than {max_depth} levels")
    return value


def encodable(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: str) -> str:
    """Check a client's text for the database: no NUL, encodable as UTF-8."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not encodable(value):
        raise ValueError("cannot be encoded as UTF-8 (it holds a lone surrogate such as \\ud800)")
    return value


#: Text from a client: any string a database column accepts (no NUL, encodable as UTF-8).
Text = Annotated[str, AfterValidator(storable)]


def printable(text: str) -> str:
    """``text`` with anything unencodable escaped, so an error message can quote it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def request_problem(value: Any, *, max_depth: int = REQUEST_JSON_DEPTH) -> str | None:
    """What is wrong with a decoded request body, or ``None``: too deep, or a string
    (key or value) that cannot be encoded as UTF-8, named by its path (``agents.planner``)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        where = ".".join(path[:6]) + (".…" if len(path) > 6 else "") or "the body"
        if isinstance(item, str):
            if not encodable(item):
                return f"{where}: the text cannot be encoded as UTF-8 (a lone surrogate)"
            continue
        if isinstance(item, dict):
            pairs: list[tuple[str, Any]] = []
            for key, child in item.items():
                if isinstance(key, str) and not encodable(key):
                    return f"{where}: a key cannot be encoded as UTF-8 (a lone surrogate)"
                pairs.append((printable(str(key)), child))
        elif isinstance(item, list | tuple):
            pairs = [(str(n), child) for n, child in enumerate(item)]
        else:
            continue
        if len(path) >= max_depth:
            return f"{where}: nested deeper than {max_depth} levels"
        stack.extend((child, (*path, key)) for key, child in pairs)
    return None
