"""The README is the user's manual: its Python examples use only the public API, and the
handler example is the code of topology/example_handlers.py (which a test runs)."""

from __future__ import annotations

import re
from pathlib import Path

import streams
import streams.faust as streams_faust

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_python_imports_only_from_the_front_door() -> None:
    imports = [
        line
        for block in PYTHON_BLOCKS
        for line in block.splitlines()
        if re.match(r"\s*(from|import) streams", line)
    ]
    assert imports, "the README shows no Python import of streams"
    for line in imports:
        # The one other door: the faust extra's own package (README "faust-streaming").
        door = streams_faust if line.strip().startswith("from streams.faust ") else streams
        assert line.strip().startswith(f"from {door.__name__} import "), line
        names = line.split(" import ", 1)[1].replace("(", "").replace(")", "").split(",")
        for name in (n.strip() for n in names if n.strip()):
            assert name in door.__all__, f"{name} is not in {door.__name__}.__all__"
            assert getattr(door, name) is not None


def test_readme_handler_example_is_the_example_handlers_file() -> None:
    source = (REPO / "topology" / "example_handlers.py").read_text(encoding="utf-8")
    shown = [block for block in PYTHON_BLOCKS if "async def plan" in block]
    assert len(shown) == 1
    assert shown[0].strip() in source


def test_every_public_name_resolves() -> None:
    for name in streams.__all__:
        assert getattr(streams, name) is not None, name
