"""The tracing benchmark's switch (benchmarks/bench_tracing.py), without the platform: the
stack's tracing settings as each state writes them, everything else kept."""

from __future__ import annotations

from benchmarks.bench_tracing import OFF, ON, tracing_settings

STACK = (
    "TRACING_OTLP_ENDPOINT=http://127.0.0.1:4317\nTRACING_ENABLED=true\nTRACING_SAMPLE_RATIO=0.01\n"
)


def test_on_is_the_stack_as_it_runs() -> None:
    assert tracing_settings("", ON, None) == ""
    assert tracing_settings(STACK, ON, None) == (
        "TRACING_OTLP_ENDPOINT=http://127.0.0.1:4317\nTRACING_SAMPLE_RATIO=0.01\n"
    )


def test_off_turns_tracing_off_and_keeps_the_rest() -> None:
    assert tracing_settings("", OFF, None) == "TRACING_ENABLED=false\n"
    assert tracing_settings(STACK, OFF, None) == (
        "TRACING_OTLP_ENDPOINT=http://127.0.0.1:4317\nTRACING_SAMPLE_RATIO=0.01\n"
        "TRACING_ENABLED=false\n"
    )


def test_another_ratio_replaces_the_stacks_when_on() -> None:
    assert tracing_settings(STACK, ON, "0.1") == (
        "TRACING_OTLP_ENDPOINT=http://127.0.0.1:4317\nTRACING_SAMPLE_RATIO=0.1\n"
    )
