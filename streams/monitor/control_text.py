"""The words for a workflow's degradation level and operators' controls, shared by the
terminal table, the heartbeat and the status page (README "Operator controls").

Owns the wording of a snapshot's `control` part (the JSON form of
streams.control.state.ControlView plus the ladder's level names); must not read Kafka
nor render markup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

Control = Mapping[str, Any]


def _audit(record: Mapping[str, Any]) -> str:
    why = record.get("why")
    return f"{record.get('who')}: {why}" if why else str(record.get("who"))


def level_text(control: Control) -> str:
    """ "level essential (forced by ana until 14:30: incident 42)" or "level lean"."""
    forced = control.get("forced")
    if not forced:
        return f"level {control['level']}"
    expires = forced.get("expires_at_ms")
    until = ""
    if expires is not None:
        until = f" until {time.strftime('%H:%M', time.localtime(expires / 1000))}"
    why = f": {forced['why']}" if forced.get("why") else ""
    return f"level {control['level']} (forced by {forced.get('who')}{until}{why})"


def paused_text(control: Control) -> str | None:
    """ "paused by operators: enrich (bo: backfill later)"; None when nothing is."""
    paused: Mapping[str, Mapping[str, Any]] = control.get("paused_stages") or {}
    if not paused:
        return None
    return "paused by operators: " + ", ".join(
        f"{stage} ({_audit(record)})" for stage, record in sorted(paused.items())
    )


def forced_open_text(control: Control) -> str | None:
    """ "tools forced open: crm (ana: vendor outage)"; None when none is."""
    tools: Mapping[str, Mapping[str, Any]] = control.get("tools_forced_open") or {}
    if not tools:
        return None
    return "tools forced open: " + ", ".join(
        f"{tool} ({_audit(record)})" for tool, record in sorted(tools.items())
    )


def control_lines(control: Control | None) -> list[str]:
    """Every line a person needs: the level, then manual pauses and forced-open tools."""
    if control is None:
        return []
    lines = [level_text(control)]
    lines.extend(t for t in (paused_text(control), forced_open_text(control)) if t)
    return lines
