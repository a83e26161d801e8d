"""`Admin.apply` (behind `streams topology apply`) returns when what it created or grew is
usable: the broker's metadata lists every partition. A caller that reads partitions right
after (a test, the monitor, a worker's lag reader) must not see a fresh topic as absent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.kafka.admin import Admin, TopicWanted

pytestmark = [pytest.mark.integration]


def test_created_and_grown_topics_are_listed_with_every_partition_when_apply_returns(
    admin: Admin, unique: Callable[[str], str]
) -> None:
    short: list[str] = []
    for round_ in range(20):
        names = [unique(f"apply{round_}x{i}") for i in range(10)]
        admin.apply([TopicWanted(name, 6) for name in names])
        listed = admin.partition_counts()
        short += [f"{n}: {listed.get(n, 0)}" for n in names if listed.get(n, 0) != 6]
    grown = unique("grown")
    admin.apply([TopicWanted(grown, 2)])
    admin.apply([TopicWanted(grown, 8)])
    listed = admin.partition_counts()
    if listed.get(grown, 0) != 8:
        short.append(f"{grown} (grown 2 -> 8): {listed.get(grown, 0)}")
    assert not short, f"listed short right after apply: {short}"
