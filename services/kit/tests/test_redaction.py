"""Redaction of secrets and the size cap of request_data."""

from __future__ import annotations

import json

import pytest

from gatehouse_kit.redaction import REDACTED, SENSITIVE_KEYS, redact, request_data_json


def test_every_sensitive_key_is_redacted_whatever_its_case() -> None:
    data = {key.upper() if i % 2 else key.title(): "s3cret" for i, key in enumerate(SENSITIVE_KEYS)}
    assert redact(data) == dict.fromkeys(data, REDACTED)


def test_redaction_reaches_nested_mappings_and_lists_and_keeps_the_rest() -> None:
    data = {
        "name": "Ada",
        "auth": {"Authorization": "Bearer abc", "scheme": "bearer"},
        "cards": [{"card_number": "4111", "CVV": "123", "holder": "Ada"}, ("x", {"pwd": "p"})],
        "Api-Key": "k",
        "token_count": 3,
    }
    assert redact(data) == {
        "name": "Ada",
        "auth": {"Authorization": REDACTED, "scheme": "bearer"},
        "cards": [
            {"card_number": REDACTED, "CVV": REDACTED, "holder": "Ada"},
            ["x", {"pwd": REDACTED}],
        ],
        "Api-Key": REDACTED,
        "token_count": 3,
    }
    assert data["auth"] == {"Authorization": "Bearer abc", "scheme": "bearer"}


def test_a_whole_sensitive_subtree_is_replaced() -> None:
    assert redact({"secret": {"nested": "value"}}) == {"secret": REDACTED}


def test_request_data_is_redacted_compact_json() -> None:
    text = request_data_json({"name": "Ada", "password": "hunter2"})
    assert json.loads(text) == {"name": "Ada", "password": REDACTED}
    assert "hunter2" not in text
    assert request_data_json(None) == ""


@pytest.mark.parametrize("filler", ["a", "é", "\n", "😀"])
def test_oversized_request_data_becomes_a_truncation_marker_within_the_cap(filler: str) -> None:
    data = {"password": "hunter2", "blob": filler * 10_000}
    text = request_data_json(data, max_bytes=1024)
    assert len(text.encode()) <= 1024
    marker = json.loads(text)
    assert marker["_truncated"] is True
    assert marker["_original_bytes"] > 1024
    assert marker["_preview"].startswith('{"password":"[REDACTED]","blob":"')
    assert "hunter2" not in text
    assert len(marker["_preview"]) > 100


def test_request_data_with_lone_surrogates_is_utf8_json_of_the_same_data() -> None:
    # json.loads('{"name": "\\ud800"}') holds a lone surrogate, which UTF-8 cannot encode.
    data = json.loads('{"name": "a\\ud800b", "note": "caf\\u00e9"}')
    text = request_data_json(data)
    text.encode()
    assert json.loads(text) == data
    big = request_data_json({"name": "\ud800" * 2000}, max_bytes=512)
    assert len(big.encode()) <= 512
    assert json.loads(big)["_truncated"] is True
