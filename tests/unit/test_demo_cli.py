"""`streams demo --client-config FILE` (issue 15 §3): the demo connects with the file's
settings like every other command, and a file it cannot read is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app

pytestmark = pytest.mark.timeout(30)


def test_demo_reads_its_client_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "client.properties"
    result = CliRunner().invoke(
        app,
        ["demo", "--quick", "--no-live", "--out", str(tmp_path), "--client-config", str(missing)],
    )
    assert result.exit_code == 1, result.output
    assert f"{missing}: cannot read the client config file" in result.output
    assert not any(tmp_path.glob("2*")), "no run started without a cluster to run on"
