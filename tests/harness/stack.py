"""How tests reach the whole running platform: Traefik, Keycloak, Prometheus, services.

In order:
1. An already-running stack named by the environment: `GATEHOUSE_STACK_WEB_URL` (the
   public entrypoint, e.g. `http://localhost:8080`); the others default to the same
   host on the standard ports and may be given too: `GATEHOUSE_STACK_HTTPS_URL`,
   `GATEHOUSE_STACK_GRPC_TARGET`, `GATEHOUSE_STACK_METRICS_URL`,
   `GATEHOUSE_STACK_DASHBOARD_URL`, `GATEHOUSE_STACK_PROMETHEUS_URL`,
   `GATEHOUSE_STACK_ALERTMANAGER_URL`, `GATEHOUSE_STACK_ALERT_RECEIVER_URL`,
   `GATEHOUSE_STACK_KEYCLOAK_DIRECT_URL` (Keycloak's own port).
2. With `GATEHOUSE_TEST_STACK=compose`, the compose stack of docker-compose.yml:
   `bash scripts/compose.sh up` (the images of `make images`, every container healthy),
   on its own published ports (the native ones + 10000 by default), so that it never
   meets a native stack on this machine; removed with its networks and volumes
   (`scripts/compose.sh down`) at the end of the session.
3. Else (`GATEHOUSE_TEST_STACK=native`, the default) the native stack of `make run`:
   `bash scripts/run.sh up -d`, which reuses a stack that is already running and returns
   once every process answers.
A native stack started here runs two replicas of every service (`*_REPLICAS`, default 2
here) so that replica, rolling-restart and chaos tests see the production shape, and the
gateway with a small audit buffer (`GATEWAY_AUDIT_BUFFER_CAPACITY`, default 1000 here) so
that live alert tests can fill it.
The native stack is left running after the session (reruns start at once) unless
`CI=true`, where a stack the session started is stopped at its end.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.harness.backends import REPO, chosen_mode

REALM = "gatehouse"
CLIENT_ID = "gatehouse-web"
NATIVE_STATE = Path(os.environ.get("GATEHOUSE_STATE", str(Path.home() / ".local/state/gatehouse")))
TEST_AUDIT_BUFFER_CAPACITY = "1000"
TEST_REPLICAS = "2"
# Supervisor's names for the programs that have replicas ("gateway-1" -> "gateway:gateway-1").
REPLICATED = ("gateway", "authors", "audit", "ratelimit")


def dev_password(username: str) -> str:
    """The development-only password of a realm user (deploy/keycloak/gatehouse-realm.json)."""
    return f"{username}-dev-password"


def supervisor_name(process: str) -> str:
    """Supervisor's name for `process`: `gateway-0`, `gateway` (all replicas) or `keycloak`."""
    if process in REPLICATED:
        return f"{process}:*"
    group = process.rsplit("-", 1)[0]
    return f"{group}:{process}" if group in REPLICATED else process


@dataclass(frozen=True)
class Stack:
    """The platform as a test sees it: its addresses and, natively, its process control."""

    web_url: str
    https_url: str
    grpc_target: str
    metrics_url: str
    dashboard_url: str
    prometheus_url: str
    alertmanager_url: str
    alert_receiver_url: str
    keycloak_direct_url: str
    native: bool
    state_dir: Path | None = None
    # The trace backend's query API (Jaeger, docs/tracing.md).
    tracing_url: str = "http://127.0.0.1:16686"
    # The log store's query API (docs/logging.md).
    logs_url: str = "http://127.0.0.1:9428"

    def replicas(self, process: str) -> int:
        """How many replicas of `process` (gateway, authors, audit, ratelimit) run.

        Natively, what scripts/run.sh recorded when it started the stack; otherwise
        `<PROCESS>_REPLICAS` from the environment (default 1).
        """
        key = f"{process.upper()}_REPLICAS"
        if self.state_dir is not None:
            recorded = (self.state_dir / "replicas.env").read_text().splitlines()
            counts = dict(line.split("=", 1) for line in recorded if "=" in line)
            return int(counts[key])
        return int(os.environ.get(key, "1"))

    @property
    def issuer(self) -> str:
        """The realm's issuer: pinned to the public URL, whichever way a token is fetched."""
        return f"{self.web_url}/auth/realms/{REALM}"

    @property
    def keycloak_url(self) -> str:
        """Keycloak's base URL through the public entrypoint (`.../auth`)."""
        return f"{self.web_url}/auth"

    @property
    def token_url(self) -> str:
        """The realm's token endpoint through the public entrypoint."""
        return f"{self.keycloak_url}/realms/{REALM}/protocol/openid-connect/token"

    def token_response(self, username: str, password: str | None = None) -> httpx.Response:
        """The raw answer to a password grant for `username` through `:8080/auth`."""
        return httpx.post(
            self.token_url,
            data={
                "grant_type": "password",
                "client_id": CLIENT_ID,
                "username": username,
                "password": password if password is not None else dev_password(username),
                "scope": "openid",
            },
            timeout=30,
        )

    def token(self, username: str, password: str | None = None) -> str:
        """An access token for a realm user (development password unless given)."""
        response = self.token_response(username, password)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def tls_context(self) -> ssl.SSLContext:
        """An SSL context trusting the HTTPS entrypoint's development certificate.

        Natively it is the file scripts/dev-cert.sh wrote; otherwise the certificate the
        server presents, which must then be a valid self-signed one for its host name.
        """
        if self.state_dir is not None:
            return ssl.create_default_context(cafile=str(self.state_dir / "tls" / "dev.crt"))
        url = urlsplit(self.https_url)
        pem = ssl.get_server_certificate((url.hostname or "localhost", url.port or 443))
        return ssl.create_default_context(cadata=pem)

    def log_path(self, program: str) -> Path:
        """The log file of a native program (`traefik`, `keycloak`, `gateway-0`, ...)."""
        if self.state_dir is None:
            raise RuntimeError("logs are files only for the native stack")
        return self.state_dir / "logs" / f"{program}.log"

    def access_log_lines(self, last: int = 5000) -> list[str]:
        """The last `last` lines of Traefik's access log on the native stack: the file
        Traefik writes, after what its rotated predecessor holds (scripts/logrotate.sh)."""
        if self.state_dir is None:
            raise RuntimeError("logs are files only for the native stack")
        current = self.state_dir / "logs" / "traefik-access.log"
        lines = current.read_text(errors="replace").splitlines() if current.exists() else []
        rotated = current.with_name(f"{current.name}.1")
        if len(lines) < last and rotated.exists():
            lines = rotated.read_text(errors="replace").splitlines() + lines
        return lines[-last:]

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run supervisorctl against the native stack (`status`, `restart gateway:*`, ...)."""
        if not self.native:
            raise RuntimeError("only the native stack runs under supervisord")
        return subprocess.run(
            ["bash", str(REPO / "scripts" / "run.sh"), "ctl", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self, process: str) -> None:
        """Stop one program of the native stack (`gateway-0`, `authors`, `keycloak`...)."""
        result = self.supervisorctl("stop", supervisor_name(process))
        if result.returncode != 0:
            raise RuntimeError(f"could not stop {process}: {result.stdout}{result.stderr}")

    def start(self, process: str) -> None:
        """Start again a program stopped with `stop` (returns once supervisord has it up)."""
        result = self.supervisorctl("start", supervisor_name(process))
        if result.returncode != 0:
            raise RuntimeError(f"could not start {process}: {result.stdout}{result.stderr}")


def stack_from_env(web_url: str) -> Stack:
    """A stack someone else runs, from GATEHOUSE_STACK_* variables."""
    host = urlsplit(web_url).hostname or "localhost"
    env = os.environ.get
    return Stack(
        web_url=web_url.rstrip("/"),
        https_url=env("GATEHOUSE_STACK_HTTPS_URL", f"https://{host}:8443"),
        grpc_target=env("GATEHOUSE_STACK_GRPC_TARGET", f"{host}:8081"),
        metrics_url=env("GATEHOUSE_STACK_METRICS_URL", f"http://{host}:8082"),
        dashboard_url=env("GATEHOUSE_STACK_DASHBOARD_URL", f"http://{host}:8083"),
        prometheus_url=env("GATEHOUSE_STACK_PROMETHEUS_URL", f"http://{host}:9090"),
        alertmanager_url=env("GATEHOUSE_STACK_ALERTMANAGER_URL", f"http://{host}:9093"),
        alert_receiver_url=env("GATEHOUSE_STACK_ALERT_RECEIVER_URL", f"http://{host}:9095"),
        keycloak_direct_url=env("GATEHOUSE_STACK_KEYCLOAK_DIRECT_URL", f"http://{host}:8180"),
        native=False,
        tracing_url=env("GATEHOUSE_STACK_TRACING_URL", f"http://{host}:16686"),
        logs_url=env("GATEHOUSE_STACK_LOGS_URL", f"http://{host}:9428"),
    )


def local_stack(*, native: bool) -> Stack:
    """The stack on this machine's standard ports (native or compose-published)."""
    return Stack(
        web_url="http://localhost:8080",
        https_url="https://localhost:8443",
        grpc_target="127.0.0.1:8081",
        metrics_url="http://127.0.0.1:8082",
        dashboard_url="http://127.0.0.1:8083",
        prometheus_url="http://127.0.0.1:9090",
        alertmanager_url="http://127.0.0.1:9093",
        alert_receiver_url="http://127.0.0.1:9095",
        keycloak_direct_url="http://127.0.0.1:8180",
        native=native,
        state_dir=NATIVE_STATE if native else None,
    )


def wait_until_routed(stack: Stack, seconds: float = 300) -> None:
    """Wait until the gateway, Keycloak and Prometheus answer through their published ports."""
    urls = (
        f"{stack.web_url}/health/live",
        f"{stack.keycloak_url}/realms/{REALM}/.well-known/openid-configuration",
        f"{stack.prometheus_url}/-/ready",
    )
    deadline = time.monotonic() + seconds
    for url in urls:
        while True:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")
            time.sleep(1)


def native_env(**overrides: str) -> dict[str, str]:
    """The environment in which the harness starts the native stack."""
    env = {**os.environ, **overrides}
    env.setdefault("GATEWAY_AUDIT_BUFFER_CAPACITY", TEST_AUDIT_BUFFER_CAPACITY)
    for process in REPLICATED:
        env.setdefault(f"{process.upper()}_REPLICAS", TEST_REPLICAS)
    return env


def native_running() -> bool:
    """True when a native stack's supervisord answers."""
    status = subprocess.run(
        ["bash", str(REPO / "scripts" / "run.sh"), "status"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return status.returncode == 0


STACK_MODES = ("native", "compose")


def stack_mode() -> str:
    """`GATEHOUSE_TEST_STACK`: `native` (default) or `compose`."""
    return chosen_mode("GATEHOUSE_TEST_STACK", STACK_MODES)


def compose_script(*args: str) -> subprocess.CompletedProcess[str]:
    """`bash scripts/compose.sh ARGS` (what `make compose-up` and `compose-down` run)."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "compose.sh"), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def compose_published(service: str, port: int) -> str:
    """`localhost:PORT` where the compose stack publishes `service`'s container `port`."""
    answer = compose_script("port", service, str(port))
    if answer.returncode != 0:
        raise RuntimeError(f"{service}:{port} is not published: {answer.stderr.strip()}")
    return "localhost:" + answer.stdout.strip().rsplit(":", 1)[1]


def compose_addresses() -> Stack:
    """The running compose stack as the host reaches it."""
    web = compose_published("traefik", 8080)
    return Stack(
        web_url=f"http://{web}",
        https_url=f"https://{compose_published('traefik', 8443)}",
        grpc_target=compose_published("traefik", 8081),
        metrics_url=f"http://{compose_published('traefik', 8082)}",
        dashboard_url=f"http://{compose_published('traefik', 8083)}",
        prometheus_url=f"http://{compose_published('prometheus', 9090)}",
        alertmanager_url=f"http://{compose_published('alertmanager', 9093)}",
        alert_receiver_url=f"http://{compose_published('alertmanager', 9095)}",
        keycloak_direct_url="http://"
        + compose_published("keycloak", 8180).replace("localhost", "127.0.0.1"),
        native=False,
        tracing_url=f"http://{compose_published('jaeger', 16686)}",
        logs_url=f"http://{compose_published('victoria-logs', 9428)}",
    )


@contextlib.contextmanager
def compose_stack() -> Iterator[Stack]:
    """The compose stack, up for the session and then removed with all it made.

    A failed start is reported with its own output; the teardown that follows it is
    tried too, but its failure never hides the start's.
    """
    up = compose_script("up")
    if up.returncode != 0:
        down = compose_script("down")
        after = "" if down.returncode == 0 else f"\n(teardown failed too: {down.stderr.strip()})"
        raise RuntimeError(
            f"scripts/compose.sh up failed (exit {up.returncode}):\n{up.stderr.strip()}{after}"
        )
    try:
        stack = compose_addresses()
        wait_until_routed(stack)
        yield stack
    finally:
        down = compose_script("down")
        if down.returncode != 0:
            raise RuntimeError(f"scripts/compose.sh down failed: {down.stderr.strip()}")


@contextlib.contextmanager
def running_stack() -> Iterator[Stack]:
    """The session's platform, by the first of the three ways that applies."""
    if web_url := os.environ.get("GATEHOUSE_STACK_WEB_URL"):
        yield stack_from_env(web_url)
        return
    if stack_mode() == "compose":
        with compose_stack() as stack:
            yield stack
        return
    started_here = not native_running()
    subprocess.run(
        ["bash", str(REPO / "scripts" / "run.sh"), "up", "-d"],
        check=True,
        timeout=900,
        stdout=subprocess.DEVNULL,
        env=native_env(),
    )
    try:
        yield local_stack(native=True)
    finally:
        if started_here and os.environ.get("CI") == "true":
            subprocess.run(
                ["bash", str(REPO / "scripts" / "run.sh"), "down"], timeout=300, check=False
            )
