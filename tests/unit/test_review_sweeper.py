"""Tombstones for decided reviews (pure part): a decided or timed-out entry may go once
the review stage's group has committed past its record (its outcome is acknowledged and
the record is never redelivered) and its decision is older than the clear-rate window
(every reader of W.reviews counts it until then); a pending one, one still uncommitted,
one decided lately, or one whose record is not known never goes."""

from __future__ import annotations

from streams.review.records import ReviewEntry
from streams.review.sweeper import settled
from streams.types import TopicPartition

TP = TopicPartition("w.approve.standard", 0)


NOW_MS = 1_000_000
KEEP_MS = 600_000


def _entry(
    run_id: str, state: str, offset: int, topic: str = TP.topic, decided_ms: int = 0
) -> ReviewEntry:
    return ReviewEntry(
        workflow="w",
        stage="approve",
        run_id=run_id,
        state=state,  # type: ignore[arg-type]
        tenant="t",
        lane="standard",
        admitted_at_ms=0,
        deadline_ms=1,
        payload=b"",
        record_topic=topic,
        record_partition=TP.partition,
        record_offset=offset,
        decided_at_ms=None if state == "pending" else decided_ms,
    )


def test_only_decided_entries_committed_past_go() -> None:
    entries = [
        _entry("approved", "approved", 3),
        _entry("timed-out", "timed_out", 4),
        _entry("declined-uncommitted", "declined", 5),  # committed offset 5: not past it
        _entry("pending", "pending", 1),
        _entry("unknown-record", "approved", -1),  # written before records were kept
        _entry("other-topic", "approved", 0, topic="w.approve.urgent"),  # nothing committed
        _entry("lately", "approved", 2, decided_ms=NOW_MS - KEEP_MS + 1),  # still counted
    ]
    committed = {TP: 5, TopicPartition("w.approve.urgent", 0): None}
    found = settled(entries, committed, now_ms=NOW_MS, keep_decided_ms=KEEP_MS)
    assert [e.run_id for e in found] == ["approved", "timed-out"]
    assert settled(entries, {}, now_ms=NOW_MS, keep_decided_ms=KEEP_MS) == []  # no offsets
    later = settled(entries, committed, now_ms=NOW_MS + 1, keep_decided_ms=KEEP_MS)
    assert [e.run_id for e in later] == ["approved", "timed-out", "lately"]
