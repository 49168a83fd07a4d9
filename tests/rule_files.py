"""A copy of the shipped rule files to change in a test, and check-rules' refusal of it: for
the tests that show a rule-file mistake is refused (one definition, named thresholds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from cds_service.cli import main

CARDS = Path(__file__).resolve().parents[1] / "cards"


def copy_cards(tmp_path: Path) -> Path:
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    return cards


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def refused(cards: Path, capsys) -> str:
    """What check-rules says when it refuses ``cards`` (it must refuse them)."""
    assert main(["check-rules", "--cards-dir", str(cards)]) == 1
    return capsys.readouterr().err
