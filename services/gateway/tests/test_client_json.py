"""client_json on its own: what it refuses, what it lets through, and how fast it says so."""

from __future__ import annotations

import json
import time

import pytest

from gatehouse_gateway.client_json import MAX_DEPTH, InvalidJson, parse


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "x"}',
        nested(MAX_DEPTH),
        nested_objects(MAX_DEPTH),
        # Brackets in strings are no nesting, escaped quotes do not end a string.
        '"' + "[" * 1000 + '"',
        '{"a": "\\"' + "{[" * 500 + '"}',
        "[" + ",".join(['"[["'] * 100) + "]",
        # A surrogate pair is one character; an escaped backslash makes no escape.
        '"\\ud83d\\ude00"',
        '"\\\\ud800"',
        "[1.5, -0.0, 1e308, 12345678901234567890]",
    ],
)
def test_json_within_bounds_parses_as_json_does(text: str) -> None:
    assert parse(text) == json.loads(text)
    assert parse(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (nested(MAX_DEPTH + 1), f"is nested deeper than {MAX_DEPTH} levels"),
        (nested_objects(MAX_DEPTH + 1), f"is nested deeper than {MAX_DEPTH} levels"),
        (nested(100_000), f"is nested deeper than {MAX_DEPTH} levels"),
        ('{"name": ' + nested(1000, "{", "}") + "}", f"is nested deeper than {MAX_DEPTH} levels"),
        # Unclosed: a parser would recurse into every one before finding out.
        ("[" * 100_000, "is not valid JSON"),
        ("]" * 100, "is not valid JSON"),
        ('{"a": "x', "is not valid JSON"),
        ("", "is not valid JSON"),
        ("1" * 5000, "is not valid JSON"),
        ("NaN", "holds NaN, which is not JSON"),
        ('{"id": -Infinity}', "holds -Infinity, which is not JSON"),
        ("[1e999]", "holds a number out of range"),
        ('{"name": "\\ud800"}', "holds a lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "holds a lone UTF-16 surrogate"),
        ('["\\ude00\\ud83d"]', "holds a lone UTF-16 surrogate"),
    ],
)
def test_json_beyond_bounds_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidJson) as refused:
        parse(text)
    assert str(refused.value) == reason


@pytest.mark.parametrize("raw", [b"\xff", b'{"name": "\xed\xa0\x80"}', '"x"'.encode("utf-16")])
def test_bytes_must_be_utf8(raw: bytes) -> None:
    with pytest.raises(InvalidJson) as refused:
        parse(raw)
    assert str(refused.value) == "is not UTF-8"


@pytest.mark.parametrize(
    "text",
    [
        "[" * (1 << 20),
        '"\\"' * (1 << 18),
        "[]," * (1 << 18),
        '"' * (1 << 20),
        "[" * (MAX_DEPTH + 1) + '"\\' * (1 << 19),
    ],
    ids=["open-brackets", "escaped-quotes", "flat-pairs", "quotes", "unterminated"],
)
def test_a_megabyte_of_hostile_text_is_refused_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidJson):
        parse(text)
    # Linear C passes take milliseconds; a quadratic scan of a megabyte takes minutes.
    assert time.perf_counter() - started < 1.0
