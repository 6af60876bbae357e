"""`make k8s-check`: the Helm chart (deploy/helm/gatehouse) linted, rendered and validated.

For the default values and for the production-like values file (ci/production-values.yaml):
`helm lint --strict`, then `helm template`, then every rendered object validated against the
schema of its kind, offline: the Kubernetes API's own OpenAPI v3 documents of the pinned
release for the built-in kinds, and the openAPIV3Schema of Traefik's and Prometheus
Operator's CustomResourceDefinitions for theirs (scripts/install-k8s-schemas.sh gathers
both). Validation is strict as a server-side apply with field validation is: a field that
the schema does not name is an error, not ignored. Exit status 1 on any error, each
printed as `<values> <kind>/<name>: <where>: <what>`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "deploy" / "helm" / "gatehouse"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
RELEASE = "gatehouse"
NAMESPACE = "gatehouse"


def _tool(script: str) -> str:
    """The path a scripts/install-*.sh prints (building or fetching it on first use)."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / script)], capture_output=True, text=True, check=True
    ).stdout.strip()


def helm() -> str:
    return _tool("install-helm.sh")


def schemas_dir() -> Path:
    return Path(_tool("install-k8s-schemas.sh"))


def helm_args(values: Sequence[Path] = (), settings: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for setting in settings:
        args += ["--set", setting]
    return args


def lint(
    values: Sequence[Path] = (), settings: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), "lint", "--strict", str(CHART), *helm_args(values, settings)],
        capture_output=True,
        text=True,
    )


def template(
    values: Sequence[Path] = (), settings: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart as release `gatehouse` in namespace `gatehouse`."""
    return subprocess.run(
        [
            helm(),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--include-crds",
            *helm_args(values, settings),
        ],
        capture_output=True,
        text=True,
    )


def objects(rendered: str) -> list[dict[str, Any]]:
    """The objects of a rendered manifest stream, empty documents left out."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema in which objects with named properties allow no others
    (unless marked to keep unknown fields), as the API server's strict field validation."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@dataclass
class Schemas:
    """Validators by (apiVersion, kind): the built-in kinds' and the CRDs' kinds'."""

    directory: Path
    _built_in: dict[tuple[str, str], jsonschema_rs.Validator] = field(default_factory=dict)
    _custom: dict[tuple[str, str], jsonschema_rs.Validator] = field(default_factory=dict)
    _object_meta: jsonschema_rs.Validator | None = None

    def __post_init__(self) -> None:
        for crd_file in sorted((self.directory / "crds").glob("*.yaml")):
            for crd in objects(crd_file.read_text()):
                spec = crd["spec"]
                for version in spec["versions"]:
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    api_version = f"{spec['group']}/{version['name']}"
                    self._custom[(api_version, spec["names"]["kind"])] = (
                        jsonschema_rs.validator_for(schema)
                    )

    def _document(self, api_version: str) -> dict[str, Any]:
        group, version = _group_version(api_version)
        name = f"api__{version}" if not group else f"apis__{group}__{version}"
        return dict(json.loads((self.directory / "openapi" / f"{name}_openapi.json").read_text()))

    def _validator(self, api_version: str, kind: str) -> jsonschema_rs.Validator | None:
        key = (api_version, kind)
        if key in self._custom:
            return self._custom[key]
        if key in self._built_in:
            return self._built_in[key]
        group, version = _group_version(api_version)
        try:
            document = self._document(api_version)
        except FileNotFoundError:
            return None
        components = _strict(document["components"])
        for name, schema in components["schemas"].items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind):
                    root = {"$ref": f"#/components/schemas/{name}", "components": components}
                    self._built_in[key] = jsonschema_rs.validator_for(root)
                    return self._built_in[key]
        return None

    def _metadata_validator(self) -> jsonschema_rs.Validator:
        if self._object_meta is None:
            components = _strict(self._document("v1")["components"])
            root = {
                "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "components": components,
            }
            self._object_meta = jsonschema_rs.validator_for(root)
        return self._object_meta

    def errors(self, obj: dict[str, Any]) -> Iterator[str]:
        """What is wrong with one object, each as `<where>: <what>`."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        validator = self._validator(api_version, kind)
        if validator is None:
            yield f"(root): no schema for {kind} of {api_version or 'no apiVersion'}"
            return
        for error in validator.iter_errors(obj):
            yield f"{_where(error.instance_path)}: {error.message}"
        if (api_version, kind) in self._custom:
            for error in self._metadata_validator().iter_errors(obj.get("metadata", {})):
                yield f"{_where(['metadata', *error.instance_path])}: {error.message}"


def _where(path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in path) or "(root)"


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


@dataclass(frozen=True)
class Case:
    """One rendering: a name and its values files."""

    name: str
    values: tuple[Path, ...]


CASES = (Case("default values", ()), Case("production values", (PRODUCTION_VALUES,)))


def check(case: Case, schemas: Schemas) -> list[str]:
    """Lint, render and validate one case; its errors (empty when it passes)."""
    problems: list[str] = []
    linted = lint(case.values)
    if linted.returncode != 0:
        problems.append(f"{case.name}: helm lint failed:\n{linted.stdout}{linted.stderr}")
    rendered = template(case.values)
    if rendered.returncode != 0:
        return [*problems, f"{case.name}: helm template failed:\n{rendered.stderr}"]
    for obj in objects(rendered.stdout):
        problems += [f"{case.name} {describe(obj)}: {error}" for error in schemas.errors(obj)]
    return problems


def versions() -> dict[str, str]:
    """The pinned versions the check ran with, as the install scripts name their caches."""
    return {"helm": Path(helm()).parent.name.removeprefix("helm-"), "schemas": schemas_dir().name}


def main() -> int:
    started = time.monotonic()
    schemas = Schemas(schemas_dir())
    problems: list[str] = []
    counts: list[str] = []
    for case in CASES:
        problems += check(case, schemas)
        rendered = template(case.values)
        counts.append(
            f"{case.name}: {len(objects(rendered.stdout)) if rendered.returncode == 0 else 0}"
        )
    for problem in problems:
        print(problem, file=sys.stderr)
    tools = ", ".join(f"{name} {version}" for name, version in versions().items())
    outcome = "FAILED" if problems else "ok"
    print(
        f"k8s-check {outcome}: helm lint, helm template and schema validation of "
        f"{CHART.relative_to(REPO)} ({'; '.join(counts)} objects) with {tools} "
        f"in {time.monotonic() - started:.1f} s"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
