# The verbs people type. Each calls a real script; see README.md. `make` alone lists them.
.DEFAULT_GOAL := help
# Where the bootstrap puts the programs the machine lacks (uv on a fresh Debian 12).
export PATH := $(PATH):$(or $(GATEHOUSE_CACHE),$(HOME)/.cache/gatehouse)/bin
.PHONY: help bootstrap run down test test-containers images compose-up compose-down lint k8s-check protos bench

help: ## list the verbs
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## install what the machine lacks (Debian packages, uv, Traefik, Keycloak, buf, ghz, vegeta, Docker)
	@bash scripts/bootstrap.sh

run: bootstrap ## start the whole platform in the foreground; Ctrl-C stops it
	@bash scripts/run.sh

down: ## stop a detached platform
	@bash scripts/run.sh down

test: bootstrap images ## run every test against the real programs: the native platform (started if needed), then the container runs
	@uv run python scripts/protos.py --check
	@uv run pytest --cov --cov-report=term
	@$(CONTAINER_RUNS)

# The public contract (HTTP, WebSocket, tokens, roles, metrics through the metrics
# entrypoint) as the compose stack serves it: the tests that pass against `make run`'s
# stack, but the one that needs two gateway replicas (compose runs one).
COMPOSE_CONTRACT := tests/e2e/test_rbac.py tests/e2e/test_websocket.py tests/e2e/test_edges.py \
	tests/e2e/test_header_limits.py tests/stack/test_identity.py tests/stack/test_routing.py \
	tests/stack/test_prometheus.py \
	tests/stack/test_logs.py::test_one_query_finds_a_requests_lines_in_every_process_it_reached \
	--deselect tests/stack/test_routing.py::test_api_requests_are_spread_over_every_gateway_replica

# The container runs: that contract against the compose stack (started, then removed),
# and the integration suites of the services on PostgreSQL and Redis from testcontainers.
CONTAINER_RUNS := GATEHOUSE_TEST_STACK=compose uv run pytest -q $(COMPOSE_CONTRACT) && \
	GATEHOUSE_TEST_BACKENDS=testcontainers uv run pytest -q services/authors services/audit \
	services/ratelimit tests/test_harness.py

test-containers: images ## the public contract against the compose stack, the integration suites on testcontainers
	@$(CONTAINER_RUNS)

images: bootstrap ## build what cannot be pulled of the images docker-compose.yml runs (starts a Docker engine if needed)
	@bash scripts/docker-engine.sh start
	@bash scripts/images.sh

compose-up: bootstrap ## make images, then the platform in containers (native ports + 10000) until healthy
	@bash scripts/docker-engine.sh start
	@bash scripts/compose.sh up

compose-down: ## stop the compose stack and remove its containers, networks and volumes
	@bash scripts/compose.sh down

lint: k8s-check ## ruff, mypy --strict, buf lint and breaking, amtool check-config, the Helm chart
	@buf="$$(bash scripts/install-buf.sh)" && "$$buf" lint protos && \
		"$$buf" breaking protos --against protos/released.binpb
	@amtool check-config deploy/alertmanager/alertmanager.yml
	@uv run ruff check .
	@uv run ruff format --check .
	@uv run --group bench mypy services clients tests benchmarks scripts

k8s-check: ## the Helm chart linted, rendered and validated against the Kubernetes and CRD schemas, offline
	@uv run python scripts/k8s_check.py

protos: ## regenerate the gRPC stubs from protos/
	@uv run python scripts/protos.py

bench: bootstrap ## run the benchmarks and write benchmarks/results/
	@uv run --group bench python -m benchmarks
