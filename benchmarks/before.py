"""An earlier main of this repository, run the way `make run` ran it, for the platform
benchmark's comparison in the same run (docs/performance.md).

`running_before(ref)` extracts commit `ref` into a temporary folder (`git archive`), gives
it its own Python environment (`uv sync --frozen`, from uv's cache), its own state folder,
its own databases in the same PostgreSQL (AUTHORS_BEFORE_DB, AUDIT_BEFORE_DB, made afresh
and dropped afterwards; Redis is shared) and its rate-limit rules raised by the caller, then
starts it with its own `scripts/run.sh up -d` and stops it with `run.sh down` whatever
happens. It uses the ports the current stack uses: the current stack must not be running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.processes import REPO

AUTHORS_BEFORE_DB, AUDIT_BEFORE_DB = "authors_before", "audit_before"
SERVER_URL = "postgresql://gatehouse:gatehouse@127.0.0.1:5432"
# Its first start builds nothing that the current checkout has not built (same Traefik,
# Keycloak and Python packages), but Keycloak imports its realm afresh.
START_SECONDS = 600


@dataclass(frozen=True)
class Checkout:
    """An earlier main's stack, running: where it is and the environment it runs with."""

    ref: str
    root: Path
    state: Path
    env: dict[str, str]

    @property
    def authors_url(self) -> str:
        return f"{SERVER_URL}/{AUTHORS_BEFORE_DB}"

    def run_sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Its own scripts/run.sh with `argv`, in its environment."""
        return subprocess.run(
            ["bash", str(self.root / "scripts" / "run.sh"), *argv],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
            check=check,
        )


def _extract(ref: str, root: Path) -> str:
    """The tree of `ref` in `root`; its full commit id."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit


async def _databases(create: bool) -> None:
    """Drop AUTHORS_BEFORE_DB and AUDIT_BEFORE_DB; made empty again if `create`."""
    connection = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        for name in (AUTHORS_BEFORE_DB, AUDIT_BEFORE_DB):
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            if create:
                await connection.execute(f"CREATE DATABASE {name} OWNER gatehouse")
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_before(ref: str, raise_rules: Callable[[str], str]) -> AsyncIterator[Checkout]:
    """Commit `ref`'s stack, started and ready, its rate-limit rules `raise_rules`(shipped)."""
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        root = Path(tmp) / "gatehouse"
        root.mkdir()
        commit = await asyncio.to_thread(_extract, ref, root)
        rules = Path(tmp) / "rules.yaml"
        shipped = root / "deploy" / "ratelimit" / "rules.yaml"
        rules.write_text(raise_rules(shipped.read_text()))
        # The current checkout's environment, but never its virtual environment.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "GATEHOUSE_REPO")}
        env |= {
            "GATEHOUSE_STATE": str(Path(tmp) / "state"),
            "AUTHORS_DATABASE_URL": f"{SERVER_URL}/{AUTHORS_BEFORE_DB}",
            "AUDIT_DATABASE_URL": f"{SERVER_URL}/{AUDIT_BEFORE_DB}",
            "RATELIMIT_RULES_PATH": str(rules),
        }
        checkout = Checkout(commit[:7], root, Path(tmp) / "state", env)
        print(f"before: {commit[:7]} extracted; uv sync and its stack's start", flush=True)
        await asyncio.to_thread(
            subprocess.run,
            ["uv", "sync", "--frozen", "--quiet"],
            cwd=root,
            env=env,
            check=True,
            timeout=START_SECONDS,
        )
        await _databases(create=True)
        try:
            started = await asyncio.to_thread(checkout.run_sh, "up", "-d", check=False)
            if started.returncode != 0:
                raise RuntimeError(
                    f"{commit[:7]}'s run.sh up -d exited {started.returncode}: "
                    f"{started.stderr[-2000:]}"
                )
            yield checkout
        finally:
            await asyncio.to_thread(checkout.run_sh, "down", check=False)
            await _databases(create=False)
