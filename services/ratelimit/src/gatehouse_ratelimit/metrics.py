"""The ratelimit service's own Prometheus metrics (grpc_server_* come from the kit)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DECISIONS = Counter(
    "rate_limit_decisions_total",
    "Rate-limit decisions by domain (one of the rules' domains, else 'other') and result: "
    "ok, over_limit, shadow_over_limit (admitted only because the rule is in shadow mode), "
    "fail_open or unavailable (Redis failed in fail-open or fail-closed mode).",
    ["domain", "result"],
)
NEAR_LIMIT = Counter(
    "rate_limit_near_limit_total",
    "Admitted decisions that brought a descriptor above 80% of its limit.",
    ["domain"],
)
BACKEND_ERRORS = Counter(
    "rate_limit_backend_errors_total",
    "Redis calls that failed or exceeded the Redis timeout.",
)
FAIL_OPEN = Counter(
    "rate_limit_fail_open_total",
    "Decisions and lease calls answered without Redis because the fail mode is open.",
)
LEASES = Counter(
    "rate_limit_leases_total",
    "Lease calls by operation and result (granted, denied, released, fail_open, unavailable).",
    ["domain", "op", "result"],
)
RULES_RELOADS = Counter(
    "rate_limit_rules_reloads_total",
    "Rules file reloads by result (ok: new rules in effect; error: the old ones kept).",
    ["result"],
)
RULES_RELOAD_SUCCESS = Gauge(
    "rate_limit_rules_last_reload_success",
    "1 when the last read of the rules file was valid, 0 when it was rejected.",
)
