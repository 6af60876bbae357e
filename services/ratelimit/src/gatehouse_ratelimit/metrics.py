"""The ratelimit service's own Prometheus metrics (grpc_server_* come from the kit)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DECISIONS = Counter(
    "rate_limit_decisions_total",
    "Rate-limit decisions by domain (one of the rules' domains, else 'other') and result: "
    "ok, over_limit, shadow_over_limit (admitted only because the rule is in shadow mode), "
    "fail_open or unavailable (Redis failed in fail-open or fail-closed mode). One per "
    "ShouldRateLimit call; for LeaseQuota, one per hit of a descriptor granted or refused.",
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
QUOTA_REQUESTS = Counter(
    "rate_limit_quota_requests_total",
    "LeaseQuota requests answered, by domain and result: ok, fail_open, unavailable "
    "(Redis failed in fail-open or fail-closed mode) or invalid.",
    ["domain", "result"],
)
QUOTA_HITS = Counter(
    "rate_limit_quota_hits_total",
    "Hits of LeaseQuota grants by domain and result: granted, or returned unspent.",
    ["domain", "result"],
)
QUOTA_STREAMS = Gauge(
    "rate_limit_quota_streams",
    "LeaseQuota streams open now.",
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
