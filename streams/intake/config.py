"""Intake settings as the intake reads them: IntakeConfig and its accessors.

Owns nothing of the format: the `intake:` section is part of the one topology model
(streams.topology), checked whenever the file is loaded, so `streams topology validate`
reports its mistakes too. Must not parse or validate anything itself.
"""

from __future__ import annotations

from streams.topology import IntakeConfig, intake_limits, load_intake_config

__all__ = ["IntakeConfig", "intake_limits", "load_intake_config"]
