"""schemathesis against the gateway's own OpenAPI document, through Traefik, as `admin`.

Every operation of /openapi.json gets generated requests, valid ones and invalid ones
(a bounded number of each); no answer may be a 5xx, every answer must match the status
codes, content type, headers and schema the document declares for it, and a request
without credentials must be refused.

Left out: schemathesis's checks that the server's input validation agrees exactly
with the documented request schema (`positive_data_acceptance`,
`negative_data_rejection`). A conditional request with a generated `If-Match` rightly
gets 412, which those checks count as a rejection of valid data; see docs/testing.md.

The operations are listed at collection time from the gateway's application (the same
document, built without serving it); each test fuzzes that operation of the document
Traefik serves.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from _pytest.mark import ParameterSet
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from gatehouse_gateway.app import create_app
from gatehouse_gateway.settings import Settings
from tests.harness.stack import Stack

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]


def documented_cases() -> list[ParameterSet]:
    """A test case per documented operation and generation mode.

    Invalid requests only for operations that take input: there is nothing to get wrong
    about the others.
    """
    document = create_app(Settings()).openapi()
    cases: list[ParameterSet] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
            for mode in EXAMPLES:
                if mode is GenerationMode.POSITIVE or takes_input:
                    # Each case is its own client address, so that the per-address limit
                    # (which also counts requests without a token) is never the answer.
                    client_ip = f"198.51.100.{100 + len(cases)}"
                    label = f"{method.upper()} {path} {mode.value}"
                    cases.append(pytest.param(method.upper(), path, mode, client_ip, id=label))
    return cases


@pytest.fixture(scope="session")
def api_schema(stack: Stack) -> schemathesis.BaseSchema:
    """The gateway's OpenAPI document as Traefik serves it."""
    return schemathesis.openapi.from_url(f"{stack.web_url}/openapi.json", wait_for_schema=30)


@pytest.mark.parametrize(("method", "path", "mode", "client_ip"), documented_cases())
def test_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema,
    admin_token: str,
    method: str,
    path: str,
    mode: GenerationMode,
    client_ip: str,
) -> None:
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {admin_token}", "X-Forwarded-For": client_ip}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=20)

    answers_as_documented()
