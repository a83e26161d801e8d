"""dispatch_cap: how many calls a stage keeps in its handler runner."""

from __future__ import annotations

from streams.policy.dispatch_cap import dispatch_cap


def test_coroutines_are_capped_by_the_stage_concurrency() -> None:
    assert dispatch_cap(1000, None, batching=False) == 1000


def test_plain_calls_one_per_thread_are_capped_by_the_free_threads() -> None:
    assert dispatch_cap(1000, 32, batching=False) == 32
    assert dispatch_cap(8, 32, batching=False) == 8
    assert dispatch_cap(1000, 0, batching=False) == 0


def test_fast_plain_calls_in_batches_are_capped_like_coroutines() -> None:
    # Waiting in a batch holds no thread: the thread count is no reason to hold them back.
    assert dispatch_cap(1000, 32, batching=True) == 1000
    assert dispatch_cap(8, 32, batching=True) == 8
    assert dispatch_cap(1000, 0, batching=True) == 0  # every thread stuck: still none
