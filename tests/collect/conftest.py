"""A lab triage tree (as a mounted system drive would look) and its collection, shared by the collect tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exwatch.collect.reference import collect_tree
from exwatch.lab.triage import write_triage

BUILD = "15.1.2176.2"


@pytest.fixture(scope="session")
def lab_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("collect") / "C"
    write_triage(root, seed=3, size=1_000_000, days=2)
    return root


@pytest.fixture(scope="session")
def lab_zip(lab_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collected") / "EXCH01.zip"
    collect_tree(lab_tree, out, host="EXCH01", build=BUILD)
    return out


@pytest.fixture()
def zip_copy(lab_zip: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    dst = tmp_path / "copy.zip"
    shutil.copy(lab_zip, dst)
    return dst
