# The verbs people type. Each calls a real script; see README.md. `make` alone lists them.
.DEFAULT_GOAL := help
# Where the bootstrap puts the programs the machine lacks (uv on a fresh Debian 12).
export PATH := $(PATH):$(or $(GATEHOUSE_CACHE),$(HOME)/.cache/gatehouse)/bin
.PHONY: help bootstrap run down test lint protos bench

help: ## list the verbs
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## install what the machine lacks (Debian packages, uv, Traefik, Keycloak, buf, ghz, vegeta)
	@bash scripts/bootstrap.sh

run: bootstrap ## start the whole platform in the foreground; Ctrl-C stops it
	@bash scripts/run.sh

down: ## stop a detached platform
	@bash scripts/run.sh down

test: bootstrap ## run every test against the real programs (starts the platform if needed)
	@uv run python scripts/protos.py --check
	@uv run pytest --cov --cov-report=term

lint: ## ruff, mypy --strict, buf lint and breaking, amtool check-config
	@buf="$$(bash scripts/install-buf.sh)" && "$$buf" lint protos && \
		"$$buf" breaking protos --against protos/released.binpb
	@amtool check-config deploy/alertmanager/alertmanager.yml
	@uv run ruff check .
	@uv run ruff format --check .
	@uv run --group bench mypy services tests benchmarks scripts

protos: ## regenerate the gRPC stubs from protos/
	@uv run python scripts/protos.py

bench: bootstrap ## run the benchmarks and write benchmarks/results/
	@uv run --group bench python -m benchmarks
