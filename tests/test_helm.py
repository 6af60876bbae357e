"""The Helm chart (deploy/helm/gatehouse): rendered by the pinned Helm, validated against the
Kubernetes API's and the CRDs' schemas (scripts/k8s_check.py), its values refused by
values.schema.json when wrong, and what it renders read from the same sources as the
native stack: the compose file's image, Traefik's dynamic configuration, the Prometheus
rules and the Grafana dashboards."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse_audit import settings as audit_settings
from gatehouse_authors import settings as authors_settings
from gatehouse_gateway import settings as gateway_settings
from gatehouse_kit.settings import ServiceSettings
from gatehouse_ratelimit import settings as ratelimit_settings
from scripts import k8s_check

REPO = k8s_check.REPO


@cache
def _schemas() -> k8s_check.Schemas:
    return k8s_check.Schemas(k8s_check.schemas_dir())


@cache
def _rendered(production: bool = False) -> tuple[dict[str, Any], ...]:
    values = (k8s_check.PRODUCTION_VALUES,) if production else ()
    result = k8s_check.template(values)
    assert result.returncode == 0, result.stderr
    return tuple(k8s_check.objects(result.stdout))


def _of_kind(kind: str, production: bool = False) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _rendered(production) if o["kind"] == kind}


@pytest.mark.parametrize("case", k8s_check.CASES, ids=lambda case: case.name)
def test_the_chart_lints_renders_and_validates(case: k8s_check.Case) -> None:
    assert k8s_check.check(case, _schemas()) == []


def test_k8s_check_reports_its_steps_and_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s_check.main() == 0
    out = capsys.readouterr().out
    assert re.search(r"k8s-check ok: .* with helm v4\.3\.\d.*k8s-schemas-v1\.37\.2", out), out


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("services.gateway.replicas=two", r"/services/gateway/replicas.*want integer"),
        ("profile=staging", r"/profile.*(development|production)"),
        (
            "services.audit.autoscaling.minReplicas=1",
            r"/services/audit/autoscaling/minReplicas.*minimum",
        ),
        ("image.digest=sha256:abc", r"/image/digest.*(pattern|match)"),
        ("gateway.corsAllowedOrigins=*", r"/gateway/corsAllowedOrigins"),
        ("services.gateway.replica=3", r"/services/gateway.*replica"),
    ],
)
def test_the_values_schema_refuses_a_bad_value_with_its_path(setting: str, message: str) -> None:
    for result in (k8s_check.lint(settings=[setting]), k8s_check.template(settings=[setting])):
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "values don't meet the specifications of the schema" in output, output
        assert re.search(message, output), output


def test_an_autoscaler_whose_minimum_exceeds_its_maximum_is_refused() -> None:
    result = k8s_check.template(
        settings=[
            "services.authors.autoscaling.minReplicas=5",
            "services.authors.autoscaling.maxReplicas=3",
        ]
    )
    assert result.returncode != 0
    assert "services.authors.autoscaling: minReplicas (5) is above maxReplicas (3)" in result.stderr


def test_the_validation_refuses_unknown_fields_and_wrong_types() -> None:
    deployment = copy.deepcopy(_of_kind("Deployment")["gatehouse-gateway"])
    deployment["spec"]["replica"] = 2
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30s"
    route = copy.deepcopy(_of_kind("IngressRoute")["gatehouse-grpc"])
    route["spec"]["routes"][0]["middleware"] = []
    route["spec"]["routes"][0]["services"][0]["scheme"] = 7
    monitor = copy.deepcopy(_of_kind("ServiceMonitor")["gatehouse-gateway"])
    monitor["metadata"]["labels"]["broken"] = 1
    errors = [
        list(_schemas().errors(deployment)),
        list(_schemas().errors(route)),
        list(_schemas().errors(monitor)),
        list(_schemas().errors({"apiVersion": "apps/v1", "kind": "Deploymnet"})),
    ]
    assert any("spec: " in e and "'replica'" in e for e in errors[0]), errors[0]
    assert any(e.startswith("spec.template.spec.terminationGracePeriodSeconds:") for e in errors[0])
    assert any("'middleware'" in e for e in errors[1]), errors[1]
    assert any(e.startswith("spec.routes.0.services.0.scheme:") for e in errors[1]), errors[1]
    assert any(e.startswith("metadata.labels.broken:") for e in errors[2]), errors[2]
    assert errors[3] == ["(root): no schema for Deploymnet of apps/v1"]


def test_the_chart_deploys_the_image_compose_runs() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image = compose["x-service"]["image"]
    default = re.fullmatch(r"\$\{GATEHOUSE_IMAGE:-(.+)\}", image)
    assert default is not None, image
    containers = [
        c
        for kind in ("Deployment", "Job")
        for o in _of_kind(kind).values()
        for c in o["spec"]["template"]["spec"]["containers"]
    ]
    assert len(containers) == 6
    assert {c["image"] for c in containers} == {default.group(1)}
    pinned = {
        c["image"]
        for o in _of_kind("Deployment", production=True).values()
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert pinned == {"registry.example.com/platform/gatehouse@sha256:" + "0123456789abcdef" * 4}


def test_each_service_runs_locked_down_with_probes_on_its_health_endpoints() -> None:
    deployments = _of_kind("Deployment")
    assert set(deployments) == {
        f"gatehouse-{s}" for s in ("gateway", "authors", "audit", "ratelimit")
    }
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"requests", "limits"} <= set(container["resources"])
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
        if name == "gatehouse-gateway":
            # Drain 4 s + grace 10 s + socket close and audit flush, as supervisord and compose.
            assert pod["terminationGracePeriodSeconds"] == 30
            assert all(p["httpGet"] == {"path": "/health/live", "port": "http"} for p in probes)
        else:
            port = container["ports"][0]["containerPort"]
            assert pod["terminationGracePeriodSeconds"] > 10
            assert all(p["grpc"] == {"port": port} for p in probes)
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {
            "maxSurge": 1,
            "maxUnavailable": 0,
        }


def test_grace_periods_cover_each_process_drain_and_grace() -> None:
    """A pod is killed after its grace period: the drains of the processes' own settings
    (their defaults, which the chart leaves as they are) must end well before."""
    settings: dict[str, type[ServiceSettings]] = {
        "gateway": gateway_settings.Settings,
        "authors": authors_settings.Settings,
        "audit": audit_settings.Settings,
        "ratelimit": ratelimit_settings.Settings,
    }
    for production in (False, True):
        for name, deployment in _of_kind("Deployment", production).items():
            fields = settings[name.removeprefix("gatehouse-")].model_fields
            drain = fields["shutdown_grace_seconds"].default
            if "shutdown_drain_seconds" in fields:
                drain += fields["shutdown_drain_seconds"].default
            # Room beyond the drain for closing sockets and writing what is buffered.
            assert (
                deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 5
            )


def test_secrets_are_referenced_never_inlined() -> None:
    for production in (False, True):
        assert not _of_kind("Secret", production)
        for kind in ("Deployment", "Job"):
            for o in _of_kind(kind, production).values():
                for env in o["spec"]["template"]["spec"]["containers"][0]["env"]:
                    if re.search(r"(DATABASE_URL|REDIS_URL|SECRET)$", env["name"]):
                        assert "value" not in env
                        assert set(env["valueFrom"]) == {"secretKeyRef"}, env


def test_every_service_has_an_autoscaler_and_a_disruption_budget() -> None:
    autoscalers, budgets = _of_kind("HorizontalPodAutoscaler"), _of_kind("PodDisruptionBudget")
    assert set(autoscalers) == set(budgets) == set(_of_kind("Deployment"))
    for name, hpa in autoscalers.items():
        assert hpa["spec"]["minReplicas"] >= 2
        # Scaling down removes one replica at a time: WebSocket clients reconnect and the
        # audit service writes what it holds before the next leaves.
        assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": 120}
        ]
        assert budgets[name]["spec"]["maxUnavailable"] == 1
    production = _of_kind("Deployment", production=True)
    assert "replicas" not in production["gatehouse-gateway"]["spec"]
    assert production["gatehouse-audit"]["spec"]["replicas"] == 3
    assert "gatehouse-audit" not in _of_kind("HorizontalPodAutoscaler", production=True)


def test_tracing_is_off_unless_a_collector_is_named() -> None:
    def env(o: dict[str, Any]) -> dict[str, str]:
        container = o["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    for o in [*_of_kind("Deployment").values(), *_of_kind("Job").values()]:
        assert env(o)["TRACING_ENABLED"] == "false"
        assert "TRACING_OTLP_ENDPOINT" not in env(o)
    for o in _of_kind("Deployment", production=True).values():
        assert env(o)["TRACING_ENABLED"] == "true"
        assert env(o)["TRACING_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4317"
        assert env(o)["TRACING_SAMPLE_RATIO"] == "0.01"
    for o in _of_kind("Job", production=True).values():
        assert env(o)["TRACING_ENABLED"] == "false"
    for name, policy in _of_kind("NetworkPolicy", production=True).items():
        ports = {p["port"] for rule in policy["spec"].get("egress", []) for p in rule["ports"]}
        assert (4317 in ports) == (name.count("-") == 1 and name != "gatehouse-traefik"), name


def test_migrations_run_as_hooks_before_install_and_upgrade() -> None:
    jobs = _of_kind("Job")
    assert set(jobs) == {"gatehouse-authors-migrate", "gatehouse-audit-migrate"}
    for name, job in jobs.items():
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        (container,) = job["spec"]["template"]["spec"]["containers"]
        module = "gatehouse_" + name.removeprefix("gatehouse-").removesuffix("-migrate")
        assert container["command"] == ["python", "-m", module, "migrate"]
    for name in ("gatehouse-authors", "gatehouse-audit"):
        env = _of_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": name.split("-")[1].upper() + "_MIGRATE_ON_START", "value": "false"} in env


def _native_traefik() -> tuple[dict[str, Any], dict[str, Any]]:
    """The public routers and the middlewares of the native dynamic configuration."""
    source = (REPO / "deploy" / "traefik" / "dynamic" / "gatehouse.yml").read_text()
    api = re.search(r'\$api := "([^"]*)"', source)
    assert api is not None
    # Template lines dropped, the API rule filled in, any other expression made a word.
    plain = "\n".join(
        re.sub(r"\{\{[^}]*\}\}", "X", line.replace("{{ $api }}", api.group(1)))
        for line in source.splitlines()
        if not line.startswith("{{")
    )
    routers = re.search(r"\n  routers:\n(.*?)\n  middlewares:", plain, re.DOTALL)
    middlewares = re.search(r"\n  middlewares:\n(.*?)\n  services:", plain, re.DOTALL)
    assert routers is not None
    assert middlewares is not None
    parsed_routers = yaml.safe_load(routers.group(1))
    return (
        {n: r for n, r in parsed_routers.items() if r.get("service") in ("gateway", "keycloak")},
        yaml.safe_load(middlewares.group(1)),
    )


def test_traefik_routes_and_middlewares_are_the_native_ones() -> None:
    routers, middlewares = _native_traefik()
    rendered = _of_kind("Middleware")
    for name, middleware in rendered.items():
        assert middleware["spec"] == middlewares[name.removeprefix("gatehouse-")]
    for production in (False, True):
        routes = _of_kind("IngressRoute", production)
        entry_points = ["websecure"] if production else ["web", "websecure"]
        assert set(routes) == {"gatehouse-grpc", *(f"gatehouse-{e}" for e in entry_points)}
        for entry_point in entry_points:
            public = routes[f"gatehouse-{entry_point}"]["spec"]
            assert public["entryPoints"] == [entry_point]
            assert ("tls" in public) == (entry_point == "websecure")
            got = {
                r["match"]: (r.get("priority"), [m["name"] for m in r.get("middlewares", [])])
                for r in public["routes"]
            }
            want = {
                r["rule"]: (r.get("priority"), [f"gatehouse-{m}" for m in r.get("middlewares", [])])
                for r in routers.values()
                if r["service"] == "gateway" or production
            }
            assert got == want
    grpc = _of_kind("IngressRoute")["gatehouse-grpc"]["spec"]
    assert grpc["entryPoints"] == ["grpc"]
    assert {r["match"]: r["services"][0]["name"] for r in grpc["routes"]} == {
        f"PathPrefix(`/gatehouse.{s}.v1.`) || Host(`{s}`)": f"gatehouse-{s}"
        for s in ("authors", "audit", "ratelimit")
    }
    assert all(r["services"][0]["scheme"] == "h2c" for r in grpc["routes"])


def test_network_policies_let_only_traefik_in_and_each_service_out_to_its_backends() -> None:
    policies = _of_kind("NetworkPolicy")
    traefik = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
    }
    backends = {
        "gateway": {6379, 8080, 8081},
        "authors": {5432, 6379},
        "audit": {5432},
        "ratelimit": {6379},
    }
    for service, ports in backends.items():
        spec = policies[f"gatehouse-{service}"]["spec"]
        serving, metrics = spec["ingress"]
        assert serving["from"] == [traefik]
        assert metrics["from"][0]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "prometheus"
        }
        egress = {p["port"] for rule in spec["egress"][1:] for p in rule["ports"]}
        assert egress == ports
    internal = policies["gatehouse-traefik"]
    assert internal["metadata"]["namespace"] == "traefik"
    grpc_rule = internal["spec"]["ingress"][1]
    assert grpc_rule["ports"] == [{"protocol": "TCP", "port": 8081}]
    assert (
        grpc_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "gateway"
    )
    for job in ("authors", "audit"):
        (rule,) = policies[f"gatehouse-{job}-migrate"]["spec"]["egress"][1:]
        assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]


def test_the_prometheus_rule_holds_the_native_rules_unchanged() -> None:
    native = [
        group
        for path in sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    (rule,) = _of_kind("PrometheusRule").values()
    assert rule["spec"]["groups"] == native
    monitors = _of_kind("ServiceMonitor")
    for name, monitor in monitors.items():
        relabel = monitor["spec"]["endpoints"][0]["relabelings"]
        assert {"targetLabel": "job", "replacement": name.removeprefix("gatehouse-")} in relabel


def test_the_dashboards_are_configmaps_for_grafanas_sidecar() -> None:
    dashboards = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
    maps = _of_kind("ConfigMap")
    assert len(maps) == len(dashboards)
    for path in dashboards:
        config = maps[f"gatehouse-dashboard-{path.stem.removeprefix('gatehouse-')}"]
        assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config["data"][path.name]) == json.loads(path.read_text())


def test_the_chart_reads_the_native_files_through_symlinks() -> None:
    files = k8s_check.CHART / "files"
    assert {p.name: p.resolve() for p in files.iterdir()} == {
        "prometheus-rules": REPO / "deploy" / "prometheus" / "rules",
        "grafana-dashboards": REPO / "deploy" / "grafana" / "dashboards",
        "traefik-dynamic.yml": REPO / "deploy" / "traefik" / "dynamic" / "gatehouse.yml",
    }
    assert all(p.is_symlink() for p in files.iterdir())


def test_a_packaged_chart_holds_the_native_files_it_reads(tmp_path: Path) -> None:
    packaged = subprocess.run(
        [k8s_check.helm(), "package", str(k8s_check.CHART), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert packaged.returncode == 0, packaged.stderr
    (archive,) = tmp_path.glob("gatehouse-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        rules = members["gatehouse/files/prometheus-rules/http.yml"]
        assert rules.isfile()
        extracted = tar.extractfile(rules)
        assert extracted is not None
        assert (
            extracted.read() == (REPO / "deploy" / "prometheus" / "rules" / "http.yml").read_bytes()
        )
    rendered = subprocess.run(
        [k8s_check.helm(), "template", "gatehouse", str(archive)], capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    assert sorted(map(k8s_check.describe, k8s_check.objects(rendered.stdout))) == sorted(
        map(k8s_check.describe, _rendered())
    )


def test_a_native_file_the_chart_cannot_read_fails_the_render(tmp_path: Path) -> None:
    chart = tmp_path / "gatehouse"
    for path in k8s_check.CHART.rglob("*"):
        target = chart / path.relative_to(k8s_check.CHART)
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name == "traefik-dynamic.yml":
            target.write_text("http:\n  routers: {}\n")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    result = subprocess.run(
        [k8s_check.helm(), "template", "gatehouse", str(chart)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "no longer has the routers, middlewares and gRPC rule the chart reads" in result.stderr
