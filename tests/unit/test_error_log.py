"""HandlerErrorLog: a sampled traceback per error type per minute plus one summary line."""

from __future__ import annotations

import logging

import pytest

from streams.clock import FakeClock
from streams.runtime.error_log import HandlerErrorLog

LOGGER = "streams.runtime.error_log"


def _raised(exc: BaseException) -> BaseException:
    """The exception with a real traceback, as the handler runner hands it over."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_thousand_errors_of_two_types_in_a_minute_log_two_samples_and_one_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    errors = HandlerErrorLog(clock)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for i in range(1000):
        exc = _raised(KeyError(f"k{i}")) if i % 100 == 7 else _raised(ValueError(f"bad {i}"))
        errors.record("act", "handler_error", exc)
        clock.advance(0.059)  # 1,000 errors within 59 s
    clock.advance(1.5)  # the summary is due 60 s after the first
    errors.flush()
    lines = _messages(caplog)
    assert len(lines) == 3, lines
    samples, summary = lines[:2], lines[2]
    assert "ValueError: bad 0" in samples[0] and "KeyError: 'k7'" in samples[1]
    for sample in samples:
        assert "Traceback (most recent call last)" in sample
        assert "_raised" in sample  # the frame that raised it
    assert summary == (
        "stage act: 1000 handler errors in the last 60 s: ValueError x990, KeyError x10"
    )
    assert {r.levelno for r in caplog.records if r.name == LOGGER} == {logging.WARNING}


def test_each_type_is_sampled_again_after_a_minute_and_summaries_repeat_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    errors = HandlerErrorLog(clock)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _minute in range(3):
        for _ in range(10):
            errors.record("act", "handler_error", _raised(ValueError("again")))
            clock.advance(6.0)
    errors.flush()
    lines = _messages(caplog)
    assert sum("Traceback" in line for line in lines) == 3
    assert [line for line in lines if "Traceback" not in line] == [
        "stage act: 10 handler errors in the last 60 s: ValueError x10"
    ] * 3


def test_errors_that_were_all_shown_as_samples_need_no_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    errors = HandlerErrorLog(clock)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    errors.record("act", "handler_error", _raised(ValueError("once")))
    clock.advance(120.0)
    errors.flush()
    assert len(_messages(caplog)) == 1


def test_reasons_and_stages_are_summarised_apart_and_flush_force_ends_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    errors = HandlerErrorLog(clock)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(3):
        errors.record("act", "timeout", None)
        errors.record("plan", "handler_error", _raised(RuntimeError("x")))
    clock.advance(5.0)
    errors.flush()
    assert not any("in the last" in line for line in _messages(caplog))  # not due yet
    errors.flush(force=True)  # the worker stops: say what this window held
    summaries = sorted(line for line in _messages(caplog) if "in the last" in line)
    assert summaries == [
        "stage act: 3 timeouts in the last 5 s: no exception x3",
        "stage plan: 3 handler errors in the last 5 s: RuntimeError x3",
    ]


class _Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str refuses")

    def __repr__(self) -> str:
        raise RuntimeError("repr refuses")


class _ExitFromStr(Exception):
    def __str__(self) -> str:
        raise SystemExit(3)


class _UserAbort(BaseException):
    pass


class _NotesRefuse(Exception):
    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]  # read by traceback
        raise RuntimeError("notes refuse")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_Hostile(), "_Hostile: <exception str() failed>"),
        (_ExitFromStr(), "_ExitFromStr: <exception str() failed>"),
        (_UserAbort("stop"), "_UserAbort: stop"),
        (_NotesRefuse(), "_NotesRefuse: <exception could not be formatted>"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (SystemExit(2), "SystemExit: 2"),
    ],
)
def test_hostile_exceptions_are_logged_without_raising(
    caplog: pytest.LogCaptureFixture, exc: BaseException, expected: str
) -> None:
    errors = HandlerErrorLog(FakeClock())
    caplog.set_level(logging.WARNING, logger=LOGGER)
    errors.record("act", "handler_error", _raised(exc))
    errors.flush(force=True)
    (line,) = _messages(caplog)
    assert expected in line


def test_a_huge_message_is_truncated(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    errors = HandlerErrorLog(clock)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    errors.record("act", "handler_error", _raised(ValueError("x" * 10_000_000)))
    for _ in range(5):
        errors.record("act", "handler_error", _raised(ValueError("y" * 10_000_000)))
    errors.flush(force=True)
    sample, summary = _messages(caplog)
    assert len(sample) < 12_000
    assert "truncated" in sample
    assert summary.endswith("ValueError x6")


def test_the_number_of_types_kept_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    errors = HandlerErrorLog(clock, max_types=4)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for i in range(50):
        errors.record("act", "handler_error", _raised(type(f"Dyn{i}", (Exception,), {})()))
    clock.advance(60.0)
    errors.flush()
    lines = _messages(caplog)
    assert len(lines) == 4 + 1  # samples of the first 4 types, then one summary
    assert lines[-1].endswith("other types x46")
