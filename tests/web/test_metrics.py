"""Prometheus metrics as a scraper sees them: current without anyone opening the status page."""

from __future__ import annotations

import re
from pathlib import Path

from memesearch.web.metrics import Metrics
from tests.web.conftest import served_app


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


def test_file_gauges_follow_indexing_with_no_other_request(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    for served in served_app(tmp_path, tiny_model_dir, n_good=6):
        text = served.client.get("/metrics").text  # the first request after indexing
        assert sample(text, "memesearch_files_indexed") == len(served.corpus.good)
        assert sample(text, "memesearch_files_failed") == len(served.corpus.broken)
        assert sample(text, "memesearch_index_vectors") == len(served.corpus.good)
        assert sample(text, "memesearch_indexing") == 0
        changes = sample(text, 'memesearch_index_changes_total{outcome="added"}')
        assert changes == len(served.corpus.good)

        (served.settings.library.path / served.corpus.good[0]).unlink()
        served.client.post("/api/reindex")
        served.wait_idle()
        text = served.client.get("/metrics").text
        assert sample(text, "memesearch_files_indexed") == len(served.corpus.good) - 1
        assert sample(text, 'memesearch_index_changes_total{outcome="removed"}') == 1


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.set_counts(indexed=3, failed=1)
    assert first.registry.get_sample_value("memesearch_files_indexed") == 3
    assert second.registry.get_sample_value("memesearch_files_indexed") == 0
