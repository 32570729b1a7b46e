"""Importing memesearch tames OpenMP spinning, which would slow every search (see __init__)."""

from __future__ import annotations

import os
import subprocess
import sys


def spin_count_after_import(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    code = "import memesearch, os; print(os.environ['GOMP_SPINCOUNT'])"
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_memesearch_sets_a_short_openmp_spin() -> None:
    assert spin_count_after_import() == "10000"


def test_a_spin_count_the_user_set_wins() -> None:
    assert spin_count_after_import(GOMP_SPINCOUNT="infinite") == "infinite"
