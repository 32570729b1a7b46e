"""A non-editable install finds its migrations, templates and static files inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return next(out.glob("memesearch-*.whl"))


def test_wheel_carries_data_folders(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "memesearch/_data/alembic/env.py" in names
    assert any(n.startswith("memesearch/_data/alembic/versions/0001") for n in names)
    assert any(n.startswith("memesearch/_data/templates/") for n in names)
    assert any(n.startswith("memesearch/_data/static/") for n in names)


def test_installed_wheel_migrates_a_database(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import memesearch.resources as r, sys;"
        "from memesearch.db.session import create_store_engine;"
        "from memesearch.db.migrate import upgrade_schema;"
        "assert r.data_path('alembic').is_relative_to(sys.argv[1]), r.data_path('alembic');"
        "print(upgrade_schema(create_store_engine(sys.argv[2])))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(site), f"sqlite:///{tmp_path / 'db.sqlite'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0003"
