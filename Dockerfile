# One image for the four Python services (gateway, authors, audit, ratelimit) and the
# alert receiver; the command picks the service, e.g. `python -m gatehouse_authors`. Used
# by docker-compose.yml and built by `make images` (scripts/images.sh). The classic
# builder suffices (no BuildKit syntax). PYTHON_IMAGE is the base of both stages: the
# upstream python image by default; scripts/images.sh passes an equivalent built from
# Debian's archive where no image registry answers.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv from PyPI, at the version scripts/bootstrap.sh installs.
ARG UV_VERSION=0.13.9
# UV_SYSTEM_CERTS: uv trusts the image's certificate store (where scripts/images.sh adds
# the certificate authorities of an HTTPS proxy), not only its own.
ENV UV_COMPILE_BYTECODE=1 \
    UV_SYSTEM_CERTS=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY protos/ protos/
COPY services/ services/
# A workspace member (the SDK): read by uv, not installed without the dev group.
COPY clients/ clients/
# The locked runtime dependencies and the workspace packages, no dev tools, no editables.
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
# openssl: the development certificate (scripts/dev-cert.sh) is made in this image.
# busybox-static: a static `wget` that docker-compose.yml lends Keycloak's container for
# its health check (the Keycloak image has no HTTP client).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl busybox-static \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gatehouse \
    && mkdir -p /var/lib/gatehouse/tls /var/lib/gatehouse/prometheus-targets /var/lib/gatehouse/traefik \
        /var/lib/gatehouse/probe \
    && chown -R gatehouse:gatehouse /var/lib/gatehouse
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY deploy/ratelimit/ deploy/ratelimit/
COPY scripts/dev-cert.sh scripts/prometheus-targets.sh scripts/traefik-config.sh scripts/
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8000 9100 7051 7052 7053 9101 9102 9103 9095
CMD ["python", "-m", "gatehouse_gateway"]
