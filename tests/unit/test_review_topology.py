"""`kind: review` in a topology: a stage whose handler is a person, bounded by max_pending,
with W.reviews (compacted) among the workflow's topics; and the Review record's codec."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import ConfigError
from streams.policy.review import ReviewConfig
from streams.review.records import ReviewCodec, ReviewEntry
from streams.topology import parse_topology


def _topology(approve: dict[str, Any]) -> Any:
    return parse_topology(
        {
            "workflow": "w",
            "stages": {
                "draft": {"handler": "tests.integration.handlers:noop", "downstream": ["approve"]},
                "approve": {"downstream": ["send"], **approve},
                "send": {"handler": "tests.integration.handlers:noop"},
            },
        },
        "<test>",
    )


def test_a_review_stage_is_bounded_by_max_pending_and_waits_max_wait_s() -> None:
    topology = _topology(
        {"kind": "review", "review": {"max_pending": 7, "max_wait_s": 90, "on_timeout": "decline"}}
    )
    stage = topology.stages["approve"]
    assert stage.review == ReviewConfig(max_pending=7, max_wait_s=90, on_timeout="decline")
    assert stage.concurrency == 7  # its handler calls are its pending reviews
    assert stage.handler_timeout_s > 90  # the review's own deadline decides, not the runner
    assert topology.stages["draft"].review is None
    spec = topology.all_topics()[topology.reviews_topic]
    assert topology.reviews_topic == "w.reviews" and spec.compacted and spec.partitions == 1


def test_the_clear_rate_window_is_a_key() -> None:
    stage = _topology({"kind": "review", "review": {"rate_window_s": 120}}).stages["approve"]
    assert stage.review == ReviewConfig(rate_window_s=120)


def test_review_defaults() -> None:
    stage = _topology({"kind": "review"}).stages["approve"]
    assert stage.review == ReviewConfig()
    assert stage.concurrency == ReviewConfig().max_pending


def test_a_workflow_without_review_stages_has_no_reviews_topic() -> None:
    topology = _topology({"handler": "tests.integration.handlers:noop"})
    assert topology.reviews_topic not in topology.all_topics()


@pytest.mark.parametrize(
    ("approve", "key"),
    [
        ({"kind": "review", "handler": "tests.integration.handlers:noop"}, "handler"),
        ({"kind": "review", "review": {"on_timeout": "retry"}}, "on_timeout"),
        ({"kind": "review", "review": {"rate_window_s": 0}}, "rate_window_s"),
        ({"kind": "review", "review": {"max_pending": 0}}, "max_pending"),
        ({"handler": "tests.integration.handlers:noop", "review": {}}, "review"),
        ({}, "handler"),
        ({"kind": "person"}, "kind"),
    ],
)
def test_review_mistakes_name_their_key(approve: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _topology(approve)
    assert key in str(caught.value)


def test_review_entries_round_trip() -> None:
    codec = ReviewCodec()
    entry = ReviewEntry(
        workflow="w", stage="approve", run_id="r1", state="approved", tenant="t",
        lane="standard", admitted_at_ms=1, deadline_ms=2, decided_at_ms=3,
        decision="approve", note="ok", reviewer="ana", payload=b"{}",
    )  # fmt: skip
    assert codec.decode(codec.encode(entry)) == entry
