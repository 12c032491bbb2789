"""The Lambda context: attributes as on AWS Lambda, remaining time from an injected clock."""

from __future__ import annotations

from typing import Any

from edge.runtime.context import LambdaContext


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **overrides: Any) -> LambdaContext:
    fields: dict[str, Any] = {
        "function_name": "com.example.Hello",
        "function_version": "1.0.0",
        "aws_request_id": "req-1",
        "deadline": clock.now + 3.0,
        "clock": clock,
    }
    fields.update(overrides)
    return LambdaContext(**fields)


def test_remaining_time_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    context = make(clock)
    assert context.get_remaining_time_in_millis() == 3000
    clock.advance(1.25)
    assert context.get_remaining_time_in_millis() == 1750
    clock.advance(1.75)
    assert context.get_remaining_time_in_millis() == 0


def test_remaining_time_truncates_to_whole_milliseconds() -> None:
    clock = FakeClock()
    context = make(clock, deadline=clock.now + 0.0019)
    assert context.get_remaining_time_in_millis() == 1


def test_remaining_time_never_goes_negative() -> None:
    clock = FakeClock()
    context = make(clock)
    clock.advance(10)
    assert context.get_remaining_time_in_millis() == 0


def test_attributes_mirror_aws_lambda() -> None:
    context = make(
        FakeClock(),
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:local:000000000000:function:hello",
        log_group_name="/edge/pi01/hello",
        log_stream_name="pi01/1.0.0",
    )
    assert context.function_name == "com.example.Hello"
    assert context.function_version == "1.0.0"
    assert context.aws_request_id == "req-1"
    assert context.memory_limit_in_mb == 256
    assert context.invoked_function_arn == "arn:aws:lambda:local:000000000000:function:hello"
    assert context.log_group_name == "/edge/pi01/hello"
    assert context.log_stream_name == "pi01/1.0.0"
    assert context.identity.cognito_identity_id is None
    assert context.identity.cognito_identity_pool_id is None


def test_defaults() -> None:
    context = make(FakeClock())
    assert context.memory_limit_in_mb == 128
    assert context.invoked_function_arn == ""
    assert context.client_context.custom == {"subject": ""}
    assert context.client_context.env == {}
    assert context.client_context.client is None


def test_subject_and_custom_values_are_in_client_context() -> None:
    context = make(FakeClock(), subject="sensors/s1/hello", custom={"thing": "pi01"})
    assert context.client_context.custom == {"subject": "sensors/s1/hello", "thing": "pi01"}


def test_each_context_has_its_own_client_context() -> None:
    first = make(FakeClock(), subject="a")
    second = make(FakeClock(), subject="b")
    first.client_context.custom["added"] = True
    assert second.client_context.custom == {"subject": "b"}


def test_repr_names_function_and_request_only() -> None:
    text = repr(make(FakeClock(), subject="secret/topic"))
    assert text == "LambdaContext(function_name='com.example.Hello', aws_request_id='req-1')"


def test_a_made_context_is_what_the_constructor_makes() -> None:
    clock = FakeClock()
    fixed: dict[str, Any] = {
        "function_name": "com.example.Hello", "function_version": "1.0.0",
        "memory_limit_in_mb": 256, "invoked_function_arn": "arn:aws:lambda:local:0:function:h",
        "log_group_name": "/edge/h", "log_stream_name": "pi01", "clock": clock,
    }
    make_context = LambdaContext.maker(**fixed)
    made = make_context("req-7", clock.now + 2.0, "sensors/t")
    built = LambdaContext(aws_request_id="req-7", deadline=clock.now + 2.0,
                          subject="sensors/t", **fixed)
    assert vars(made) == vars(built)
    assert type(made) is LambdaContext
    assert made.client_context.custom == {"subject": "sensors/t"}
    assert made.get_remaining_time_in_millis() == 2000


def test_made_contexts_share_no_state() -> None:
    make_context = LambdaContext.maker(function_name="f", function_version="1")
    first = make_context("a", 10.0, "t/1")
    first.client_context.custom["seen"] = True  # a handler may write to its own context
    first.tag = "mine"  # type: ignore[attr-defined]
    second = make_context("b", 20.0, "t/2")
    assert second.client_context.custom == {"subject": "t/2"}
    assert not hasattr(second, "tag")
    assert (first.aws_request_id, second.aws_request_id) == ("a", "b")
