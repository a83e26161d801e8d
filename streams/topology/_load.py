"""Owns reading a topology file: YAML (duplicate keys refused), the one strict model, the
cross-key checks, and turning the first mistake into one ConfigError.

Must not talk to Kafka or call handlers: it only imports them to prove they exist.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from streams.errors import ConfigError
from streams.registry.settings import adopt_topology_registry
from streams.topology._build import build
from streams.topology._errors import Problem, config_error, from_validation_error, show
from streams.topology._model import TopologyIn
from streams.topology._objects import Topology


def load_topology(path: str | Path, *, validate_handlers: bool = True) -> Topology:
    """Read and validate a topology file. Raises ConfigError (one, the first found).

    With validate_handlers, every handler module is imported (running its top level), so
    tooling that only needs topic names can pass False.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, "", f"invalid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(source, "", "file is empty; copy topology/example.yaml to start")
    return _parse(data, source, validate_handlers, root)


def parse_topology(data: object, source: str, *, validate_handlers: bool = True) -> Topology:
    """Validate already-parsed data (e.g. from a test or another format); see load_topology."""
    return _parse(data, source, validate_handlers, None)


def _parse(data: object, source: str, validate_handlers: bool, root: yaml.Node | None) -> Topology:
    try:
        if not isinstance(data, dict):
            raise Problem((), f"must be a mapping with 'workflow' and 'stages', got {show(data)}")
        try:
            model = TopologyIn.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, TopologyIn) from None
        topology = build(model, source, validate_handlers)
    except Problem as problem:
        raise config_error(source, problem, root) from None
    # The registry is one per process (codecs share its ids), so a file that names one
    # configures the process: every command and worker that reads the file then uses it.
    adopt_topology_registry(topology.schema_registry_url, source)
    return topology


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML silently lets the last win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Merge keys (<<) legitimately repeat keys; only literal repeats are mistakes.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key_node.value}'", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)
