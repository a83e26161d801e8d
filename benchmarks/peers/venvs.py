"""Each peer's own virtual environment, created on first use from its pinned requirements.

The peers' pins conflict with this project's and with each other's (Quix pins
confluent-kafka 2.12, arroyo takes 2.16; faust brings aiokafka), so each runs in a venv of
its own under benchmarks/peers/.venvs/ (git-ignored), named after the peer, its version
and a hash of its requirements file: changing a pin builds a fresh one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
_READY = ".ready"  # written last: a half-built venv (interrupted install) is rebuilt


@dataclass(frozen=True, slots=True)
class Peer:
    name: str  # the system's name in the results
    package: str  # its distribution on PyPI
    module: str  # its child, run with `python -m`

    @property
    def requirements(self) -> Path:
        return HERE / f"requirements-{self.name}.txt"

    @property
    def version(self) -> str:
        """The exact pin of `package` in the requirements file."""
        prefix = f"{self.package}=="
        for line in self.requirements.read_text(encoding="utf-8").splitlines():
            if line.lower().startswith(prefix):
                return line[len(prefix) :].strip()
        raise ValueError(f"{self.requirements}: {self.package} is not pinned with ==")


PEERS = (
    Peer("quix", "quixstreams", "benchmarks.peers.quix_peer"),
    Peer("arroyo", "sentry-arroyo", "benchmarks.peers.arroyo_peer"),
    Peer("faust", "faust-streaming", "benchmarks.peers.faust_peer"),
)


def python_of(peer: Peer) -> Path:
    """The venv's interpreter, building the venv first if it is not there yet."""
    digest = hashlib.sha256(peer.requirements.read_bytes()).hexdigest()[:8]
    venv = VENVS / f"{peer.name}-{peer.version}-{digest}"
    python = venv / "bin" / "python"
    if (venv / _READY).exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    print(f"creating {venv.relative_to(HERE.parent.parent)} (first use)", flush=True)
    # The base interpreter, not this venv's: a venv made from a venv still works, but
    # the base is what the peer's own instructions assume (python -m venv; pip install).
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--requirement", str(peer.requirements)], check=True)
    (venv / _READY).write_text(digest + "\n", encoding="utf-8")
    return python
