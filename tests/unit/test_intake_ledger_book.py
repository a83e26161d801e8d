"""The intake's ledger book: counts before a reservation, which offsets are known without a
read-back, own writes skipped when read back, timed-out reservations, duplicates."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.intake.finished_runs import FinishedRun
from streams.intake.ledger_book import LedgerBook, LedgerEntry, Phase


def entry(run_id: str, tenant: str = "t", phase: Phase = "reserved", **kw: Any) -> LedgerEntry:
    fields: dict[str, Any] = {
        "lane": "standard", "at_ms": 1_000, "idempotency_key": None, "replica": "me", "offset": -1,
    }  # fmt: skip
    fields.update(kw)
    return LedgerEntry(run_id, tenant, phase=phase, **fields)


def data(run_id: str, tenant: str = "t", state: str = "queued", key: str | None = None) -> Any:
    return {
        "run_id": run_id, "tenant": tenant, "lane": "standard", "state": state,
        "admitted_at": 1_000, "idempotency_key": key, "replica": "other",
    }  # fmt: skip


def read(book: LedgerBook, offset: int, run_id: str, record: Any) -> None:
    """What the view does with one ledger record."""
    if not book.skip_own(offset):
        book.apply(offset, run_id, record)


def test_a_reservation_is_decided_on_the_entries_before_it_only() -> None:
    book = LedgerBook()
    read(book, 0, "a", data("a", "x"))
    read(book, 1, "b", data("b", "y"))
    for run_id in ("mine1", "mine2", "mine3"):
        book.note(entry(run_id))
    book.placed(2, "mine1")
    book.placed(3, "mine2")  # mine3 not placed yet
    assert book.counts().total == 5
    before_mine2 = book.counts(before_offset=3)
    assert before_mine2.total == 3  # a, b and mine1
    assert before_mine2.by_tenant == {"x": 1, "y": 1, "t": 1}
    assert book.counts(before_offset=2).total == 2


def test_offsets_are_known_through_reads_and_own_placements_until_a_gap() -> None:
    book = LedgerBook()
    assert book.known_before(0)
    read(book, 0, "a", data("a"))
    book.note(entry("mine1"))
    book.note(entry("mine2"))
    book.placed(1, "mine1")
    assert book.known_before(2)  # 0 read, 1 ours
    book.placed(3, "mine2")  # offset 2 is somebody else's, not read yet
    assert not book.known_before(3)
    assert not book.known_before(4)
    read(book, 2, "theirs", data("theirs", "z", state="reserved"))
    assert book.known_before(4)
    assert book.counts(before_offset=3).by_tenant == {"t": 2, "z": 1}


def test_own_writes_read_back_are_skipped_and_others_applied() -> None:
    book = LedgerBook()
    book.note(entry("mine"))
    book.placed(0, "mine")
    book.placed(1)  # e.g. its 'queued' entry
    assert book.skip_own(0)
    assert book.skip_own(1)
    assert not book.skip_own(2)
    assert book.read_past(2)


def test_an_own_record_read_before_its_placement_is_applied_once() -> None:
    book = LedgerBook()
    book.note(entry("mine"))
    read(book, 0, "mine", data("mine", state="reserved"))
    book.placed(0, "mine")  # the ack arrives after the read
    mine = book.entry("mine")
    assert mine is not None and mine.offset == 0
    assert book.counts().total == 1
    assert book.counts(before_offset=0).total == 0
    assert book.counts(before_offset=1).total == 1


def test_an_undecided_reservation_stops_counting_after_its_timeout() -> None:
    book = LedgerBook(reservation_timeout_s=30.0)
    read(book, 0, "old", data("old", state="reserved"))
    read(book, 1, "queued", data("queued"))
    assert book.counts(now_ms=1_000 + 29_000).total == 2
    assert book.counts(now_ms=1_000 + 31_000).total == 1  # the queued run still counts
    assert book.counts(before_offset=1, now_ms=1_000 + 31_000).total == 0


def test_tombstones_and_finished_runs_leave_the_counts() -> None:
    book = LedgerBook()
    read(book, 0, "a", data("a"))
    read(book, 1, "b", data("b"))
    read(book, 2, "a", None)
    book.finish("b")
    assert book.counts().total == 0
    book.finish("c")  # finished before its admission is read
    read(book, 3, "c", data("c"))
    assert book.counts().total == 0


def test_admitting_a_run_that_already_finished_does_not_bring_it_back() -> None:
    book = LedgerBook()
    book.note(entry("fast"))
    book.placed(0, "fast")
    book.finish("fast")  # a fast stage finished it before its admission was noted
    book.admit(entry("fast", phase="queued", offset=0))
    assert book.entry("fast") is None
    assert book.counts().total == 0


def test_the_first_entry_of_a_key_in_ledger_order_owns_it() -> None:
    book = LedgerBook()
    read(book, 0, "first", data("first", "acme", key="k"))
    read(book, 1, "second", data("second", "acme", key="k"))
    read(book, 2, "other-tenant", data("other-tenant", "globex", key="k"))
    owner = book.first_with_key("acme", "k", since_ms=0)
    assert owner is not None and owner.run_id == "first"
    assert book.first_with_key("acme", "k", since_ms=0, before_offset=0) is None
    assert book.first_with_key("acme", "k", since_ms=2_000) is None  # outside the window
    read(book, 3, "first", None)
    owner = book.first_with_key("acme", "k", since_ms=0)
    assert owner is not None and owner.run_id == "second"


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_known_before_means_every_lower_offset_was_read_or_written_by_us(
    steps: list[tuple[bool, bool]],
) -> None:
    """Offsets 0..n-1 are each ours or someone else's; reads come in order, our acks in
    order, interleaved arbitrarily. known_before(o) must hold exactly when each offset
    below o was read or is ours and acknowledged."""
    ours = [mine for mine, _ in steps]
    book = LedgerBook()
    read_next, acked_next = 0, 0
    own_offsets = [o for o, mine in enumerate(ours) if mine]
    known: set[int] = set()
    for _, read_first in steps:
        if read_first and read_next < len(ours):
            read(book, read_next, f"r{read_next}", data(f"r{read_next}"))
            known.add(read_next)
            read_next += 1
        elif acked_next < len(own_offsets):
            book.placed(own_offsets[acked_next])
            known.add(own_offsets[acked_next])
            acked_next += 1
        for offset in range(len(ours) + 1):
            assert book.known_before(offset) == all(o in known for o in range(offset))


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "admit", "read", "forget", "finish"]),
        st.integers(0, 7),  # run
        st.sampled_from(["urgent", "standard", "background"]),
        st.integers(0, 5),  # admitted at (s)
    ),
    max_size=60,
)


@given(_OPS)
def test_the_oldest_admitted_run_per_lane_is_the_one_a_full_scan_finds(
    ops: list[tuple[str, int, Any, int]],
) -> None:
    book = LedgerBook()
    offset = 0
    for op, run, lane, at in ops:
        run_id = f"r{run}"
        if op == "reserve":
            book.note(entry(run_id, lane=lane, at_ms=at))
        elif op == "admit":
            book.admit(entry(run_id, phase="queued", lane=lane, at_ms=at))
        elif op == "read":  # another replica's entry, admitted
            row = {**data(run_id), "lane": lane, "admitted_at": at}
            read(book, offset, run_id, row)
            offset += 1
        elif op == "forget":
            book.forget(run_id)
        else:
            book.finish(run_id)
        scan: dict[str, int] = {}
        for i in range(8):
            e = book.entry(f"r{i}")
            if e is not None and e.phase != "reserved":
                scan[e.lane] = min(scan.get(e.lane, e.at_ms), e.at_ms)
        assert book.oldest_admitted_ms() == scan


def finished_data(run_id: str, tenant: str = "t", key: str | None = None, **kw: Any) -> Any:
    record = data(run_id, tenant, state="finished", key=key)
    record.update({"finished_at": 5_000, "outcome": "completed", "reason": None, **kw})
    return record


def test_a_finished_run_still_owns_its_key_and_says_how_it_ended() -> None:
    book = LedgerBook(replica_id="me")
    read(book, 0, "a", data("a", "acme", key="k"))
    book.finish("a", "dead_lettered", "expired", now_ms=2_000)
    assert book.counts().total == 0
    owner = book.first_with_key("acme", "k", since_ms=0)
    assert owner is not None and owner.run_id == "a" and owner.phase == "finished"
    run = book.run("a")
    assert isinstance(run, FinishedRun)
    assert (run.outcome, run.reason, run.finished_ms) == ("dead_lettered", "expired", 2_000)
    assert book.first_with_key("acme", "k", since_ms=1_001) is None  # window from submission


def test_a_finished_entry_read_from_the_ledger_counts_nothing_and_owns_its_key() -> None:
    book = LedgerBook(replica_id="me")
    read(book, 0, "a", finished_data("a", key="k"))
    read(book, 1, "b", data("b", key="k"))  # a duplicate that should have collapsed
    assert book.counts().total == 1
    owner = book.first_with_key("t", "k", since_ms=0)
    assert owner is not None and owner.run_id == "a"
    assert book.ends_to_record(10**9) == []  # the ledger says so already: nothing to write


def test_a_run_never_waits_on_its_own_duplicated_reservation() -> None:
    """A produce retry wrote our reservation twice: the first copy is read back at 5 before
    the broker tells us the copy at 7 is ours."""
    book = LedgerBook(replica_id="me")
    book.note(entry("mine", idempotency_key="k"))
    read(book, 5, "mine", {**data("mine", key="k"), "state": "reserved", "replica": "me"})
    book.placed(7, "mine")
    assert book.first_with_key("t", "k", since_ms=0, before_offset=7) is not None
    assert book.first_with_key("t", "k", since_ms=0, before_offset=7, other_than="mine") is None
    assert book.counts().total == 1  # one run, not two


def test_the_admitting_replica_records_an_end_at_once_and_others_only_after_the_takeover() -> None:
    book = LedgerBook(replica_id="me", takeover_after_s=30)
    read(book, 0, "mine", {**data("mine"), "replica": "me"})
    read(book, 1, "theirs", data("theirs"))  # replica "other"
    read(book, 2, "recorded", data("recorded"))
    for run_id in ("mine", "theirs", "recorded"):
        book.finish(run_id, now_ms=10_000)
    assert [r.run_id for r in book.ends_to_record(10_000)] == ["mine"]
    read(book, 3, "recorded", finished_data("recorded"))  # "other" wrote this one in time
    assert book.ends_to_record(39_999) == []
    late = book.ends_to_record(40_000)
    assert [(r.run_id, r.replica) for r in late] == [("theirs", "me")]
    assert book.ends_to_record(10**9) == []  # each written once


def test_an_end_read_before_the_admission_is_recorded_once_the_admission_arrives() -> None:
    book = LedgerBook(replica_id="me")
    book.finish("fast", now_ms=3_000)
    read(book, 0, "fast", {**data("fast", key="k"), "replica": "me"})
    assert book.counts().total == 0
    assert [r.run_id for r in book.ends_to_record(3_000)] == ["fast"]
    owner = book.first_with_key("t", "k", since_ms=0)
    assert owner is not None and owner.phase == "finished"


def test_a_completion_proves_an_undecided_reservation_ran() -> None:
    book = LedgerBook(replica_id="me")
    read(book, 0, "unknown", {**data("unknown"), "state": "reserved"})
    book.finish("unknown", now_ms=4_000)
    assert book.counts().total == 0
    run = book.run("unknown")
    assert run is not None and run.phase == "finished"


def test_collapse_windows_close_into_tombstones_the_recorder_first() -> None:
    book = LedgerBook(replica_id="me", collapse_window_s=100, takeover_after_s=30)
    read(book, 0, "mine", finished_data("mine", replica="me"))
    read(book, 1, "theirs", finished_data("theirs"))
    assert book.windows_closed(1_000 + 100_000) == []  # the window is still open
    assert book.windows_closed(1_000 + 100_001) == ["mine"]
    assert book.run("mine") is None
    assert book.windows_closed(1_000 + 130_000) == []
    assert book.windows_closed(1_000 + 130_001) == ["theirs"]
    read(book, 2, "theirs", None)  # the recorder's tombstone too: harmless
    assert book.run("theirs") is None and len(book.windows_closed(10**9)) == 0


def test_admitted_runs_and_undecided_reservations_are_told_apart() -> None:
    book = LedgerBook()
    read(book, 0, "a", data("a", "x"))
    book.note(entry("r", "x"))
    assert book.counts().by_tenant == {"x": 2}
    assert book.undecided_by_tenant() == {"x": 1}
    book.admit(entry("r", "x", phase="queued"))
    assert book.undecided_by_tenant() == {}


def test_a_finished_run_without_a_key_is_kept_an_hour_for_status_only() -> None:
    book = LedgerBook(replica_id="me", collapse_window_s=86_400)
    read(book, 0, "keyed", finished_data("keyed", key="k", replica="me"))
    read(book, 1, "keyless", finished_data("keyless", replica="me"))
    assert book.windows_closed(1_000 + 3_600_000) == []
    assert book.windows_closed(1_000 + 3_600_001) == ["keyless"]
    assert book.run("keyed") is not None
    assert book.windows_closed(1_000 + 86_400_001) == ["keyed"]
