"""LatencyWindow: bounded rolling window, nearest-rank quantiles."""

from __future__ import annotations

import pytest

from streams.policy.latency import LatencyWindow


def test_empty_window_has_no_quantile() -> None:
    assert LatencyWindow().p95() is None


def test_p95_nearest_rank() -> None:
    window = LatencyWindow()
    for ms in range(1, 101):
        window.add(ms / 1000)
    assert window.p95() == pytest.approx(0.095)
    assert window.quantile(0.0) == pytest.approx(0.001)
    assert window.quantile(1.0) == pytest.approx(0.1)


def test_window_is_bounded_and_forgets_oldest() -> None:
    window = LatencyWindow(max_samples=10)
    for _ in range(10):
        window.add(100.0)
    for _ in range(10):
        window.add(0.5)
    assert len(window) == 10
    assert window.quantile(1.0) == 0.5


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_rejects_invalid_latency(bad: float) -> None:
    with pytest.raises(ValueError):
        LatencyWindow().add(bad)


@pytest.mark.parametrize("q", [-0.01, 1.01])
def test_rejects_invalid_quantile(q: float) -> None:
    with pytest.raises(ValueError):
        LatencyWindow().quantile(q)


def test_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        LatencyWindow(max_samples=0)
