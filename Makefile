# The verbs people type. Each calls a real script; see README.md.
.PHONY: bootstrap run down test lint protos bench

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@bash scripts/run.sh

down:
	@bash scripts/run.sh down

test: bootstrap
	@uv run python scripts/protos.py --check
	@uv run pytest --cov --cov-report=term

lint:
	@"$$(bash scripts/install-buf.sh)" lint protos
	@uv run ruff check .
	@uv run ruff format --check .
	@uv run mypy services tests benchmarks scripts

protos:
	@uv run python scripts/protos.py

bench: bootstrap
	@uv run python -m benchmarks
