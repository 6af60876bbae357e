"""The whole Helm chart applied to a real Kubernetes API server: etcd and kube-apiserver of
the pinned release (scripts/install-kube-apiserver.sh) on loopback, Traefik's and
Prometheus Operator's CRDs installed, then every rendered object sent as a server-side
apply with dryRun=All and strict field validation, for the default and the
production-like values. The server runs its own defaulting, validation (names,
selectors, probes, CEL rules of the CRDs) and admission, which no schema check has."""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts import k8s_check

NAMESPACES = ("gatehouse", "traefik", "monitoring")
APPLY = {"Content-Type": "application/apply-patch+yaml"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, ready: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    """Waits up to 180 s (a loaded 2-core machine) for `ready()`, failing with the log."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not ready within 180 s:\n{log.read_text()[-4000:]}")


class Cluster:
    """A client of the API server with the discovery of its resources."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}

    def _discover(self, api_version: str) -> None:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        answer = self.client.get(prefix)
        answer.raise_for_status()
        for resource in answer.json()["resources"]:
            if "/" not in resource["name"]:
                self._resources[(api_version, resource["kind"])] = (
                    f"{prefix}/{{namespace}}{resource['name']}",
                    resource["namespaced"],
                )

    def url(self, obj: dict[str, Any], namespace: str) -> str:
        key = (obj["apiVersion"], obj["kind"])
        if key not in self._resources:
            self._discover(obj["apiVersion"])
        template, namespaced = self._resources[key]
        where = f"namespaces/{obj['metadata'].get('namespace', namespace)}/" if namespaced else ""
        return f"{template.format(namespace=where)}/{obj['metadata']['name']}"

    def apply(self, obj: dict[str, Any], namespace: str, dry_run: bool) -> httpx.Response:
        params = {"fieldManager": "helm", "fieldValidation": "Strict", "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        return self.client.patch(
            self.url(obj, namespace), params=params, headers=APPLY, content=json.dumps(obj)
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binaries = Path(
        subprocess.run(
            ["bash", str(k8s_check.REPO / "scripts" / "install-kube-apiserver.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    work = tmp_path_factory.mktemp("kube")
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    etcd_log, api_log = work / "etcd.log", work / "kube-apiserver.log"
    with etcd_log.open("wb") as out:
        etcd = subprocess.Popen(
            [
                str(binaries / "etcd"),
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait("etcd", lambda: httpx.get(f"{etcd_url}/health").status_code == 200, etcd, etcd_log)
        key = work / "service-account.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        token = secrets.token_hex(16)
        (work / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
        with api_log.open("wb") as out:
            api = subprocess.Popen(
                [
                    str(binaries / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    # No Service "kubernetes" whose endpoint would be this loopback address.
                    "--endpoint-reconciler-type=none",
                    f"--secure-port={api_port}",
                    f"--cert-dir={work / 'certs'}",
                    f"--token-auth-file={work / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    f"--service-account-key-file={key}",
                    f"--service-account-signing-key-file={key}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--service-cluster-ip-range=10.96.0.0/16",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # The server's certificate, self-signed with its own authority before it listens.
        certificate = work / "certs" / "apiserver.crt"
        _wait("kube-apiserver's port", lambda: _listening(api_port), api, api_log)
        client = httpx.Client(
            base_url=f"https://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(certificate)),
            timeout=30,
        )
        try:
            _wait("kube-apiserver", lambda: client.get("/readyz").status_code == 200, api, api_log)
            yield Cluster(client)
        finally:
            client.close()
            api.terminate()
            api.wait(timeout=60)
    finally:
        etcd.terminate()
        etcd.wait(timeout=60)


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Cluster:
    """The CRDs and the namespaces the chart's objects live in, created for real."""
    crds = [
        crd
        for path in sorted((k8s_check.schemas_dir() / "crds").glob("*.yaml"))
        for crd in k8s_check.objects(path.read_text())
    ]
    for crd in crds:
        answer = cluster.apply(crd, "", dry_run=False)
        assert answer.status_code in (200, 201), answer.text
    for name in NAMESPACES:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        assert cluster.apply(namespace, "", dry_run=False).status_code in (200, 201)

    def established() -> bool:
        for crd in crds:
            got = cluster.client.get(cluster.url(crd, "")).json()
            conditions = {
                c["type"]: c["status"] for c in got.get("status", {}).get("conditions", [])
            }
            if conditions.get("Established") != "True":
                return False
        return True

    deadline = time.monotonic() + 120
    while not established():
        assert time.monotonic() < deadline, "the CRDs were not established within 120 s"
        time.sleep(0.5)
    return cluster


@pytest.mark.parametrize("case", k8s_check.CASES, ids=lambda case: case.name)
def test_every_object_passes_a_server_side_dry_run(
    installed: Cluster, case: k8s_check.Case
) -> None:
    rendered = k8s_check.template(case.values)
    assert rendered.returncode == 0, rendered.stderr
    objects = k8s_check.objects(rendered.stdout)
    refused = {}
    for obj in objects:
        answer = installed.apply(obj, k8s_check.NAMESPACE, dry_run=True)
        if answer.status_code not in (200, 201):
            refused[k8s_check.describe(obj)] = answer.json().get("message", answer.text)
    assert refused == {}
    assert len(objects) > 30
    assert installed.client.get("/version").json()["gitVersion"] == "v1.37.2"


def test_the_server_refuses_what_the_schemas_cannot_see(installed: Cluster) -> None:
    rendered = k8s_check.objects(k8s_check.template().stdout)
    (deployment,) = [
        o
        for o in rendered
        if o["metadata"]["name"] == "gatehouse-gateway" and o["kind"] == "Deployment"
    ]
    deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "elsewhere"
    answer = installed.apply(deployment, k8s_check.NAMESPACE, dry_run=True)
    assert answer.status_code == 422
    assert "`selector` does not match template `labels`" in answer.json()["message"]
    (route,) = [
        o
        for o in rendered
        if o["kind"] == "IngressRoute" and o["metadata"]["name"] == "gatehouse-grpc"
    ]
    route["spec"]["routes"][0]["kind"] = "Regex"
    answer = installed.apply(route, k8s_check.NAMESPACE, dry_run=True)
    assert answer.status_code == 422
    assert "spec.routes[0].kind" in answer.json()["message"]
