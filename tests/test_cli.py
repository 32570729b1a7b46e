"""The command line as a user runs it: index a 300-file folder, search it, read errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memesearch.cli import app
from memesearch.testing import write_config
from tests.corpus import make_corpus, write_image


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_index_a_300_file_folder_then_search_it(
    runner: CliRunner, tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    corpus = make_corpus(library, n_good=290)
    config = write_config(
        tmp_path / "config.toml",
        {
            "library": {"path": str(library), "max_file_mb": 2},
            "database": {"url": f"sqlite:///{tmp_path / 'data' / 'm.db'}"},
            "model": {"name": f"local-dir:{tiny_model_dir}", "batch_size": 32},
        },
    )
    code, output = invoke(runner, "index", "--config", str(config), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["added"] == len(corpus.good) == 290
    failed = {item["path"]: item["reason"] for item in report["failed"]}
    assert set(failed) == set(corpus.broken)
    for path, fragment in corpus.broken.items():
        assert fragment in failed[path], (path, failed[path])
        assert failed[path]  # every failure says why

    code, output = invoke(runner, "index", "--config", str(config), "--json")
    again = json.loads(output)
    assert (again["decoded"], again["embedded"], again["added"], again["failed"]) == (0, 0, 0, [])
    assert again["still_failing"] == len(corpus.broken)

    code, output = invoke(runner, "search", "cat wearing sunglasses", "-k", "5", "-c", str(config))
    assert code == 0
    lines = output.strip().splitlines()
    assert len(lines) == 5
    assert all(line.split("  ", 1)[1] in corpus.good for line in lines)

    own = corpus.good[42]
    code, output = invoke(
        runner, "search", "--image", str(library / own), "-k", "3", "--json", "-c", str(config)
    )
    results = json.loads(output)["results"]
    assert results[0]["path"] == own and results[0]["score"] == pytest.approx(1.0, abs=1e-3)

    code, output = invoke(runner, "status", "--failures", "--json", "-c", str(config))
    status = json.loads(output)
    assert (status["indexed"], status["failed"]) == (290, len(corpus.broken))
    assert {item["path"] for item in status["failures"]} == set(corpus.broken)
    # The search saved the index it built; `index` keeps that file current for `serve`.
    assert status["index"].startswith("flat, 290 vectors, current")
    write_image(library / "late-arrival.png", seed=999)
    assert invoke(runner, "index", "-c", str(config))[0] == 0
    code, output = invoke(runner, "status", "--json", "-c", str(config))
    assert json.loads(output)["index"].startswith("flat, 291 vectors, current")


def test_human_summary_and_weights(runner: CliRunner, config_file: Path, library: Path) -> None:
    for i in range(6):
        write_image(library / f"m{i}.png", seed=i)
    (library / "bad.gif").write_bytes(b"GIF89a")
    code, output = invoke(runner, "index", "-c", str(config_file))
    assert code == 0
    assert "added" in output and "6" in output
    assert "failed: bad.gif:" in output
    code, output = invoke(
        runner,
        "search",
        "frog",
        "--minus",
        "cartoon",
        "--image",
        f"{library / 'm1.png'}:0.5",
        "--like",
        "1:-0.3",
        "--json",
        "-c",
        str(config_file),
    )
    assert code == 0, output
    assert len(json.loads(output)["results"]) == 6


def test_bad_input_gets_a_clear_message_and_exit_code(
    runner: CliRunner, config_file: Path, tmp_path: Path
) -> None:
    code, output = invoke(runner, "search", "cat", "--like", "abc", "-c", str(config_file))
    assert code == 2 and "ID[:WEIGHT]" in output
    code, output = invoke(runner, "search", "--image", "/no/such.png", "-c", str(config_file))
    assert code == 2 and "cannot read image" in output
    code, output = invoke(runner, "search", "cat", "--like", "12345", "-c", str(config_file))
    assert code == 1 and "no indexed image has id 12345" in output
    bad = write_config(tmp_path / "bad.toml", {"model": {"batch_size": 0}})
    code, output = invoke(runner, "index", "-c", str(bad))
    assert code == 2
    assert (
        "model.batch_size" in output
        and str(bad) in output
        and "greater than or equal to 1" in output
    )


def test_config_from_environment_variable(
    runner: CliRunner, config_file: Path, library: Path
) -> None:
    write_image(library / "x.png", seed=3)
    code, output = invoke(runner, "index", "--json", env={"MEMESEARCH_CONFIG": str(config_file)})
    assert code == 0 and json.loads(output)["added"] == 1


def test_console_script_and_module_entry_points(config_file: Path, library: Path) -> None:
    write_image(library / "x.png", seed=3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("memesearch")
    done = subprocess.run(
        [str(exe), "index", "--json", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 1
    done = subprocess.run(
        [sys.executable, "-m", "memesearch", "status", "--json", "-c", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == 1
