"""Unit tests of the input rules."""

from __future__ import annotations

import pytest

from gatehouse_authors.rules import clean_name
from gatehouse_kit.errors import InvalidArgument


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("  Ada  ", "Ada"),
        ("\u3000Ada\u00a0Lovelace\n", "Ada\u00a0Lovelace"),
        ("é" * 255, "é" * 255),
    ],
)
def test_names_are_trimmed_of_any_whitespace(raw: str, kept: str) -> None:
    assert clean_name(raw) == kept


@pytest.mark.parametrize("raw", ["", "\u2003\t", "x" * 256, "a\x07b", "a\nb"])
def test_empty_long_or_control_character_names_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        clean_name(raw)
    assert [field for field, _ in refused.value.violations] == ["name"]
