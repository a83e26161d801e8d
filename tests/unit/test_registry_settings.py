"""The schema registry's URL from a topology file (`schema_registry.url`): parsed and
checked with the file, adopted for the process, overridden by the variable, and refused
when a second file names another registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import ConfigError
from streams.events import TaskEventCodec
from streams.registry.settings import (
    SCHEMA_REGISTRY_URL_ENV,
    forget_adopted_registry,
    schema_registry_url,
)
from streams.topology import load_topology, parse_topology

HANDLER = "topology.example_handlers:plan"


@pytest.fixture(autouse=True)
def no_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(SCHEMA_REGISTRY_URL_ENV, raising=False)
    forget_adopted_registry()
    yield
    forget_adopted_registry()


def _file(tmp_path: Path, registry: Any, name: str = "wf.yaml") -> Path:
    data: dict[str, Any] = {"workflow": "wf", "stages": {"plan": {"handler": HANDLER}}}
    if registry is not None:
        data["schema_registry"] = registry
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_file_without_the_key_names_no_registry(tmp_path: Path) -> None:
    topology = load_topology(_file(tmp_path, None), validate_handlers=False)
    assert topology.schema_registry_url is None
    assert schema_registry_url() is None


def test_the_files_registry_is_used_by_the_process(tmp_path: Path) -> None:
    topology = load_topology(
        _file(tmp_path, {"url": "http://127.0.0.1:8081/"}), validate_handlers=False
    )
    assert topology.schema_registry_url == "http://127.0.0.1:8081"
    assert schema_registry_url() == "http://127.0.0.1:8081"
    # A codec made afterwards frames records for the registry's subjects.
    assert TaskEventCodec().serde._ids is not None


def test_the_variable_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEMA_REGISTRY_URL_ENV, "http://registry.example:8081")
    load_topology(_file(tmp_path, {"url": "http://127.0.0.1:8081"}), validate_handlers=False)
    assert schema_registry_url() == "http://registry.example:8081"
    assert schema_registry_url({}) is None  # an explicit mapping is read alone


def test_the_same_registry_from_two_files_is_fine(tmp_path: Path) -> None:
    load_topology(_file(tmp_path, {"url": "http://127.0.0.1:8081"}, "a.yaml"))
    load_topology(_file(tmp_path, {"url": "http://127.0.0.1:8081/"}, "b.yaml"))
    assert schema_registry_url() == "http://127.0.0.1:8081"


def test_a_second_file_naming_another_registry_is_refused_naming_file_and_key(
    tmp_path: Path,
) -> None:
    first = _file(tmp_path, {"url": "http://127.0.0.1:8081"}, "a.yaml")
    second = _file(tmp_path, {"url": "http://127.0.0.1:9999"}, "b.yaml")
    load_topology(first, validate_handlers=False)
    with pytest.raises(ConfigError) as info:
        load_topology(second, validate_handlers=False)
    assert info.value.source == str(second)
    assert info.value.key_path == "schema_registry.url"
    assert "http://127.0.0.1:9999 differs from http://127.0.0.1:8081" in str(info.value)
    assert str(first) in str(info.value)
    assert schema_registry_url() == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("registry", "problem"),
    [
        ({"url": "127.0.0.1:8081"}, "must be an http:// or https:// URL"),
        ({"url": "https://"}, "must be an http:// or https:// URL"),
        ({"url": 8081}, "url"),
        ({}, "url"),
        ({"url": "http://h:1", "auth": "x"}, "auth"),
    ],
)
def test_a_bad_registry_key_is_one_clear_error_and_adopts_nothing(
    registry: dict[str, Any], problem: str
) -> None:
    data = {"workflow": "wf", "stages": {"plan": {}}, "schema_registry": registry}
    with pytest.raises(ConfigError) as info:
        parse_topology(data, "wf.yaml", validate_handlers=False)
    assert info.value.source == "wf.yaml"
    assert info.value.key_path.startswith("schema_registry"), info.value
    assert problem in str(info.value)
    assert schema_registry_url() is None
