"""`make help` (and `make` alone) lists every verb of the Makefile and of the README."""

from __future__ import annotations

import re
import subprocess

from tests.harness.backends import REPO


def _listed(*args: str) -> dict[str, str]:
    out = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(re.findall(r"^\s+make (\S+)\s+(\S.*)$", out, flags=re.MULTILINE))


def test_make_alone_lists_every_phony_target_with_one_line() -> None:
    makefile = (REPO / "Makefile").read_text()
    declared = re.search(r"^\.PHONY: (.*)$", makefile, flags=re.MULTILINE)
    assert declared is not None
    phony = set(declared.group(1).split())
    listed = _listed()
    assert set(listed) == phony
    assert all(listed.values())
    assert _listed("help") == listed


def test_every_verb_the_readme_names_is_listed() -> None:
    readme = (REPO / "README.md").read_text()
    verbs = set(re.findall(r"`make ([a-z0-9-]+)", readme))
    assert verbs, "the README names no make verb"
    assert verbs <= set(_listed())
