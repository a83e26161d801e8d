"""streams' controls for faust-streaming agents: the optional extra ``streams[faust]``.

``govern(app, topology, "stage")`` makes a faust app one stage of a streams workflow, and
``@stage.agent()`` wraps an agent so that it reads TaskEvent envelopes, never sees an
expired or undecodable record (those go to the workflow's dead letters, raw bytes kept),
pauses exactly its input partitions while the stages downstream are over the topology's
pressure thresholds, exports the worker's metrics and publishes pressure reports that
streams' own workers, the intake and the monitor read (README "faust-streaming").

Owns the public API of the extra; the rest of streams must not import it (faust is
optional; an import contract in pyproject.toml keeps faust inside this package).
"""

from __future__ import annotations

from streams.faust._options import FaustOptions
from streams.faust._stage import FaustStageStatus, GovernedStage, govern

__all__ = ["FaustOptions", "FaustStageStatus", "GovernedStage", "govern"]
