"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: each
service command is a real `streams` CLI entry point and Kafka matches the pinned version."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from streams.cli import app
from streams.config import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, object]]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, object]] = data["services"]
    return services


def test_kafka_image_matches_the_pinned_version() -> None:
    assert _compose()["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    pom = (ROOT / "streams/kafka/resources/broker-pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom


def test_every_streams_service_command_is_a_real_cli_entry_point() -> None:
    commands = [
        command
        for service in _compose().values()
        if isinstance(command := service.get("command"), list) and command[0] == "streams"
    ]
    assert len(commands) >= 2
    runner = CliRunner()
    for command in commands:
        assert isinstance(command, list)
        # Walk the command path up to the first option, then ask that command for --help.
        path = [part for part in command[1:] if not part.startswith("-")][:2]
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (command, result.output)
        for option in (part for part in command if part.startswith("--")):
            assert option in result.output, (command, option)


def test_topology_files_named_in_compose_exist() -> None:
    for service in _compose().values():
        command = service.get("command")
        if isinstance(command, list):
            for part in command:
                if part.endswith(".yaml"):
                    assert (ROOT / part).is_file(), part
