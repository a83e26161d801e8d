"""A failed reading is unreadable only once no reading has succeeded for the grace."""

from __future__ import annotations

import pytest

from streams.policy.reading_grace import ReadingGrace


def test_unreadable_before_any_success() -> None:
    assert not ReadingGrace(2.0).readable(0.0)


def test_one_failed_read_within_the_grace_stays_readable_and_then_does_not() -> None:
    grace = ReadingGrace(2.0)
    grace.succeeded(10.0)
    assert grace.readable(10.5)  # the next read failed: still readable
    assert grace.readable(12.0)
    assert not grace.readable(12.01)  # no success for over 2 s: unreadable
    grace.succeeded(13.0)
    assert grace.readable(13.0)  # back at once


def test_a_zero_grace_is_the_last_reading_only() -> None:
    grace = ReadingGrace(0.0)
    grace.succeeded(1.0)
    assert grace.readable(1.0) and not grace.readable(1.01)
    with pytest.raises(ValueError, match="grace_s"):
        ReadingGrace(-1)
