#!/usr/bin/env bash
# Installs everything Gatehouse needs on a fresh Debian 12 machine, idempotently, from
# Debian's archive, PyPI, the Go module proxy and Maven Central: Debian packages (Chromium
# for the browser tests among them), uv and the Python workspace, Go (when the machine's
# is missing or too old), Traefik and Jaeger (built once and cached), Java 21+ and Keycloak (fetched
# once and cached), buf, ghz and vegeta (built once and cached). The first run says what
# each slow step does; a second run takes seconds.
source "$(dirname "$0")/lib.sh"
uv_version=0.13.9
apt_install postgresql-15 postgresql-contrib redis-server prometheus prometheus-alertmanager ca-certificates
# Rotates the log files a program writes itself (scripts/logrotate.sh: Traefik's access log).
apt_install logrotate
# The browser of the end-to-end tests (tests/e2e/test_browser.py), driven by Playwright:
# Debian's own build, so that nothing downloads one.
apt_install chromium
if ! command -v uv >/dev/null 2>&1; then
  # Beside the system's Python, never into it (Debian's is externally managed).
  log "installing uv $uv_version from PyPI into $GATEHOUSE_CACHE/uv-venv (first run only, seconds)"
  apt_install python3-venv
  python3 -m venv "$GATEHOUSE_CACHE/uv-venv"
  "$GATEHOUSE_CACHE/uv-venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
  mkdir -p "$GATEHOUSE_CACHE/bin" && ln -sfn ../uv-venv/bin/uv "$GATEHOUSE_CACHE/bin/uv"
fi
cd "$REPO_ROOT"
# The workspace runs on the machine's Python 3.11; uv never downloads one.
export UV_PYTHON_DOWNLOADS=never
[ -d "${UV_PROJECT_ENVIRONMENT:-.venv}" ] ||
  log "uv sync: the Python workspace from PyPI into ${UV_PROJECT_ENVIRONMENT:-.venv} (first run only, about a minute)"
# Bytecode compiled once at install: the environment may forbid writing it at import
# (PYTHONDONTWRITEBYTECODE), and every process would then compile its imports anew
# (the gateway: 1.4 s of start-up CPU instead of 0.6 s).
ticking "installing the Python workspace" uv sync --frozen --quiet --compile-bytecode
# Debian's Docker engine when none answers (as root), and the Compose CLI plugin.
bash scripts/docker-engine.sh install
bash scripts/install-traefik.sh >/dev/null
bash scripts/install-jaeger.sh >/dev/null
# The log store, its shipper and the alerts from logs (docs/logging.md), built once and cached.
bash scripts/install-victorialogs.sh >/dev/null
bash scripts/install-otelcol.sh >/dev/null
bash scripts/install-vmalert.sh >/dev/null
bash scripts/install-keycloak.sh >/dev/null
bash scripts/install-buf.sh >/dev/null
bash scripts/install-ghz.sh >/dev/null
bash scripts/install-vegeta.sh >/dev/null
# The Helm chart's check (`make k8s-check`): Helm, and the Kubernetes and CRD schemas;
# its server-side dry run (tests/test_helm_apiserver.py): kube-apiserver and etcd.
bash scripts/install-helm.sh >/dev/null
bash scripts/install-k8s-schemas.sh >/dev/null
bash scripts/install-kube-apiserver.sh >/dev/null
log "ready"
