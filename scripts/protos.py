"""Generate the Python stubs of protos/ (`make protos`), or check them for drift (`--check`).

The stubs are committed so that services install without grpcio-tools; the check
regenerates into a temporary folder and fails when anything differs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "protos"
PACKAGE = "gatehouse_protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(root: Path, out: Path) -> None:
    """Run protoc over every .proto below `root` into `out`."""
    sources = sorted(str(p.relative_to(root)) for p in (root / PACKAGE).rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs drift")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the protos folder")
    args = parser.parse_args()
    check, root = args.check, args.root.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(root, out)
        fresh, committed = generated_files(out), generated_files(root)
        drift = sorted(
            str(p)
            for p in fresh | committed
            if p not in fresh or p not in committed or not filecmp.cmp(out / p, root / p, False)
        )
        if check:
            if drift:
                print("stubs differ from protos/ (run `make protos`):", *drift, sep="\n  ")
                return 1
            print(f"protos: {len(fresh)} generated files up to date")
            return 0
        for p in committed - fresh:
            (root / p).unlink()
        for p in fresh:
            shutil.copyfile(out / p, root / p)
        print(f"protos: wrote {len(fresh)} files, {len(drift)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
