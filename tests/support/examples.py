"""The example case files of the repository, in file order."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("ivclms-0*.json"))
