"""JSON that a client sent, read within bounds: the one parser of request bodies and frames.

`parse(raw)` reads one JSON document (RFC 8259) and refuses, with `InvalidJson`, what the
gateway cannot safely carry further:

- text that is not UTF-8;
- arrays and objects nested deeper than `MAX_DEPTH` levels. The depth is checked on the
  raw text before anything is parsed, in time linear in its length: deeper input would
  exhaust the recursion of the parser, of validation, redaction and serialization;
- numbers JSON does not have (`NaN`, `Infinity`) or that overflow a float (`1e999`);
- strings holding a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8 text, protobuf
  string or database column can hold; paired surrogates (`"\\ud83d\\ude00"`) are fine.

The size of what is parsed is bounded by the callers: `GATEWAY_MAX_BODY_BYTES` for HTTP
bodies, `GATEWAY_WS_MAX_FRAME_BYTES` for WebSocket frames.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

# The deepest nesting of arrays and objects accepted (`{"name": "x"}` is 1 level deep).
MAX_DEPTH = 32

# A string, up to its closing quote or, when it has none, to the end of the text (such
# text is invalid anyway, and one match keeps the scan linear). Possessive, so that
# nothing is tried twice.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND_OF_BRACKET = bytes.maketrans(b"{}", b"[]")
# A \u escape of a UTF-16 surrogate: only text holding one can parse to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Escaped pairs parse to one character; a surrogate left in a parsed string is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidJson(ValueError):
    """Input that is not JSON within the bounds above.

    The message completes a sentence about the input ("request body is not valid JSON"),
    and is fit to be shown to the client.
    """


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("holds a number out of range")
    return value


def _not_json(name: str) -> NoReturn:
    raise InvalidJson(f"holds {name}, which is not JSON")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_not_json)


def _check_depth(text: str) -> None:
    """Refuse `text` when its arrays and objects nest deeper than MAX_DEPTH levels, or
    when its brackets do not pair up (then it is no JSON at all), without parsing it.

    Text with no more than MAX_DEPTH opening brackets cannot be deeper: most input is
    let through on two counts. Otherwise brackets inside strings are set aside, and the
    brackets left are stripped of their innermost pairs once per level: at most
    MAX_DEPTH passes, each in C.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    structure = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    nesting = structure.translate(_ONE_KIND_OF_BRACKET, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not nesting:
            return
        inner_removed = nesting.replace(b"[]", b"")
        if len(inner_removed) == len(nesting):
            raise InvalidJson("is not valid JSON")
        nesting = inner_removed
    if nesting:
        raise InvalidJson(f"is nested deeper than {MAX_DEPTH} levels")


def _has_lone_surrogate(value: Any) -> bool:
    # Recursion is safe here: the value is at most MAX_DEPTH levels deep.
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def parse(raw: str | bytes | bytearray) -> Any:
    """The JSON value in `raw` (bytes must be UTF-8); raises InvalidJson (see module doc)."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson("is not UTF-8") from None
    _check_depth(text)
    try:
        value = _DECODER.decode(text)
    except InvalidJson:
        raise
    except ValueError:
        # Malformed text, or an integer of more digits than Python converts.
        raise InvalidJson("is not valid JSON") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise InvalidJson("holds a lone UTF-16 surrogate")
    return value
