"""Unit tests of the cursor codec: round trips, and refusal of anything not issued."""

from __future__ import annotations

import pytest

from gatehouse_authors.cursors import CursorCodec
from gatehouse_authors.domain import AuthorFilter
from gatehouse_kit.errors import InvalidArgument

CODEC = CursorCodec(b"test-secret")


@pytest.mark.parametrize("last_id", [1, 42, 2**63 - 1])
def test_a_cursor_round_trips_under_its_filter(last_id: int) -> None:
    author_filter = AuthorFilter(search="ada")
    cursor = CODEC.encode(last_id, author_filter)
    assert cursor.isascii()
    assert "=" not in cursor
    assert CODEC.decode(cursor, author_filter) == last_id


def test_a_cursor_of_another_secret_or_filter_is_refused() -> None:
    cursor = CursorCodec(b"other-secret").encode(7, AuthorFilter())
    with pytest.raises(InvalidArgument):
        CODEC.decode(cursor, AuthorFilter())
    with pytest.raises(InvalidArgument):
        CODEC.decode(CODEC.encode(7, AuthorFilter(name="a")), AuthorFilter(name="b"))


def test_every_single_character_change_is_refused() -> None:
    cursor = CODEC.encode(1234, AuthorFilter())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for position, original in enumerate(cursor):
        replacement = alphabet[(alphabet.index(original) + 1) % len(alphabet)]
        tampered = cursor[:position] + replacement + cursor[position + 1 :]
        with pytest.raises(InvalidArgument):
            CODEC.decode(tampered, AuthorFilter())
