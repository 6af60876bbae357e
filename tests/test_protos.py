"""The contracts: committed stubs match protos/, buf's lint holds them to its rules, and
buf breaking holds them to the last released state (protos/released.binpb)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTOS = REPO / "protos"
AUTHORS_PROTO = Path("gatehouse_protos/authors/v1/authors.proto")
# The image of the contracts as last released, which `make lint` compares against.
RELEASED = PROTOS / "released.binpb"


def drift_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts/protos.py"), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def protos_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    return copy


@pytest.fixture(scope="module")
def buf() -> str:
    return subprocess.run(
        ["bash", str(REPO / "scripts/install-buf.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout.strip()


def test_committed_stubs_match_the_protos() -> None:
    result = drift_check(PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_editing_a_proto_without_regenerating_fails_the_check(protos_copy: Path) -> None:
    proto = protos_copy / AUTHORS_PROTO
    proto.write_text(
        proto.read_text().replace(
            "  int64 version = 5;\n", "  int64 version = 5;\n  string bio = 6;\n"
        )
    )
    result = drift_check(protos_copy)
    assert result.returncode == 1
    assert "authors_pb2.py" in result.stdout


def test_buf_lint_passes_on_the_contracts(buf: str) -> None:
    result = subprocess.run(
        [buf, "lint", str(PROTOS)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_rejects_a_badly_named_enum(buf: str, protos_copy: Path) -> None:
    proto = protos_copy / AUTHORS_PROTO
    proto.write_text(proto.read_text() + "\nenum Colour {\n  RED = 0;\n}\n")
    result = subprocess.run(
        [buf, "lint", str(protos_copy)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "RED" in result.stdout


def buf_breaking(buf: str, protos: Path) -> subprocess.CompletedProcess[str]:
    """`make lint`'s check of `protos` against the released image, one JSON line a finding."""
    return subprocess.run(
        [buf, "breaking", str(protos), "--against", str(RELEASED), "--error-format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_buf_breaking_passes_on_the_contracts(buf: str, protos_copy: Path) -> None:
    assert buf_breaking(buf, PROTOS).returncode == 0
    # A new field is compatible: it passes too.
    proto = protos_copy / AUTHORS_PROTO
    proto.write_text(
        proto.read_text().replace(
            "  int64 version = 5;\n", "  int64 version = 5;\n  string bio = 6;\n"
        )
    )
    result = buf_breaking(buf, protos_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ("", "FIELD_NO_DELETE"),
        ("  int64 version = 15;\n", "FIELD_NO_DELETE"),
        ("  string version = 5;\n", "FIELD_SAME_TYPE"),
    ],
    ids=["removed", "renumbered", "retyped"],
)
def test_buf_breaking_rejects_an_incompatible_field(
    buf: str, protos_copy: Path, change: str, rule: str
) -> None:
    proto = protos_copy / AUTHORS_PROTO
    text = proto.read_text()
    assert "  int64 version = 5;\n" in text
    proto.write_text(text.replace("  int64 version = 5;\n", change))
    result = buf_breaking(buf, protos_copy)
    assert result.returncode != 0
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    assert (protos_copy / AUTHORS_PROTO, rule) in {
        (Path(f["path"]), f["type"]) for f in findings
    }, findings
