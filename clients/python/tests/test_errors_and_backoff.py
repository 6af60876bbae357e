"""The error model as exceptions, and the jittered backoff."""

from __future__ import annotations

import random

import pytest

from gatehouse_client import errors
from gatehouse_client.backoff import Backoff


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("invalid_data", errors.InvalidData),
        ("validation_error", errors.ValidationFailed),
        ("authentication_failed", errors.AuthenticationFailed),
        ("permission_denied", errors.PermissionDenied),
        ("not_found", errors.NotFound),
        ("conflict", errors.Conflict),
        ("precondition_failed", errors.PreconditionFailed),
        ("payload_too_large", errors.PayloadTooLarge),
        ("rate_limit_exceeded", errors.RateLimitExceeded),
        ("service_unavailable", errors.ServiceUnavailable),
        ("upstream_timeout", errors.UpstreamTimeout),
        ("internal_error", errors.InternalError),
    ],
)
def test_each_documented_code_has_its_exception(code: str, cls: type[Exception]) -> None:
    error = errors.from_error_object(
        {"code": code, "msg": "m", "details": {"x": 1}}, status=400, request_id="r-1"
    )
    assert type(error) is cls
    assert isinstance(error, errors.GatehouseError)
    assert error.details == {"x": 1}
    assert str(error) == f"400 {code}: m (request r-1)"


def test_an_unknown_code_or_no_error_object_is_the_base_error() -> None:
    assert type(errors.from_error_object({"code": "new", "msg": "m"})) is errors.GatehouseError
    plain = errors.from_error_object("text", status=502)
    assert type(plain) is errors.GatehouseError
    assert plain.status == 502


def test_rate_limit_exceeded_reads_retry_after_from_details() -> None:
    assert errors.RateLimitExceeded("m", details={"retry_after": 3}).retry_after == 3.0
    assert errors.RateLimitExceeded("m", details=None).retry_after is None
    assert errors.RateLimitExceeded("m", details={"retry_after": "x"}).retry_after is None


def test_backoff_waits_grow_to_the_maximum_with_full_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, rng=random.Random(7))
    ceilings = []
    for _ in range(6):
        ceilings.append(backoff.ceiling())
        delay = backoff.next_delay()
        assert 0 <= delay <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_backoff_spreads_clients_apart() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"initial": 5, "maximum": 1}, {"multiplier": 0.5}]
)
def test_backoff_refuses_senseless_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)  # type: ignore[arg-type]
