# One image for the four Python services (gateway, authors, audit, ratelimit) and the
# alert receiver; the command picks the service, e.g. `python -m gatehouse_authors`. Used
# by docker-compose.yml.

FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY protos/ protos/
COPY services/ services/
# The locked runtime dependencies and the workspace packages, no dev tools, no editables.
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm
# openssl: the development certificate (scripts/dev-cert.sh) is made in this image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gatehouse \
    && mkdir -p /var/lib/gatehouse/tls /var/lib/gatehouse/prometheus-targets \
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
