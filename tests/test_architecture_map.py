"""docs/architecture.md's map of the tree: every folder and file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_path_in_the_architecture_map_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Where things live"):text.index("## One run, step by step")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| concept")]
    assert len(rows) >= 20
    paths = [p for row in rows for p in re.findall(r"`([\w./]+/?)`", row) if "/" in p]
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    flow = text[text.index("## One run, step by step"):]
    named = set(re.findall(r"\b((?:advbench|datasets|attacks)/[\w/]+\.py)\b", flow))
    assert named and not [p for p in named if not (ROOT / p).exists()]
