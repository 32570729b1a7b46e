"""The REST API over HTTP: shapes external tools rely on, and a 4xx for every bad input."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator

import pytest
from PIL import Image

from memesearch.web.app import readiness
from tests.corpus import write_image
from tests.web.conftest import Served


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def own_bytes(served: Served, index: int) -> tuple[str, bytes]:
    path = served.corpus.good[index]
    return path, (served.settings.library.path / path).read_bytes()


def test_search_returns_the_documented_shape(served: Served) -> None:
    response = served.client.post("/api/search", json={"terms": [{"text": "cat"}], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "offset", "next_offset", "total_indexed"}
    assert (body["offset"], body["next_offset"], body["total_indexed"]) == (0, 5, 40)
    first = body["results"][0]
    assert set(first) == {"id", "path", "score", "width", "height", "url", "thumbnail_url"}
    assert first["url"].startswith("/media/") and first["thumbnail_url"].startswith(
        f"/thumbs/{first['id']}.webp?v="
    )
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_every_term_kind_and_weights(served: Served) -> None:
    path, data = own_bytes(served, 3)
    by_image = served.client.post(
        "/api/search", json={"terms": [{"image": b64(data)}, {"text": "dog", "weight": -0.1}]}
    ).json()["results"]
    assert by_image[0]["path"] == path
    image_id = by_image[0]["id"]
    by_id = served.client.post("/api/search", json={"terms": [{"image_id": image_id}], "k": 1})
    assert by_id.json()["results"][0]["id"] == image_id
    vector = served.state.services.repo.get_vector(
        file_id=image_id, space=served.state.services.space
    )
    assert vector is not None
    by_vector = served.client.post(
        "/api/search", json={"terms": [{"embedding": vector.tolist(), "weight": 2}], "k": 1}
    )
    assert by_vector.json()["results"][0]["id"] == image_id
    data_url = served.client.post(
        "/api/search", json={"terms": [{"image": "data:image/png;base64," + b64(data)}], "k": 1}
    )
    assert data_url.json()["results"][0]["path"] == path


def test_paging_and_path_prefix_filter(served: Served) -> None:
    full = served.client.post("/api/search", json={"terms": [{"text": "meme"}], "k": 40}).json()
    assert full["next_offset"] is None
    second = served.client.post(
        "/api/search", json={"terms": [{"text": "meme"}], "k": 10, "offset": 10}
    ).json()
    assert [r["id"] for r in second["results"]] == [r["id"] for r in full["results"][10:20]]
    filtered = served.client.post(
        "/api/search",
        json={"terms": [{"text": "meme"}], "k": 40, "filters": {"path_prefix": "reactions/"}},
    ).json()["results"]
    expected = [r["id"] for r in full["results"] if r["path"].startswith("reactions/")]
    assert filtered and [r["id"] for r in filtered] == expected


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"terms": []}, 422, "at least 1"),
        ({}, 422, "terms"),
        ({"terms": [{"text": "a", "image_id": 1}]}, 422, "exactly one"),
        ({"terms": [{"weight": 1}]}, 422, "exactly one"),
        ({"terms": [{"image": "%%% not base64 %%%"}]}, 422, "term 1: image is not valid base64"),
        ({"terms": [{"image": b64(b"plain text")}]}, 422, "term 1: not a recognised image"),
        ({"terms": [{"image_id": 999999}]}, 404, "no indexed image has id 999999"),
        ({"terms": [{"embedding": [0.5, 0.5]}]}, 422, "2 values, the model produces 32"),
        ({"terms": [{"embedding": [0.0] * 32}]}, 422, "all zeros"),
        ({"terms": [{"text": "cat"}], "k": 0}, 422, "greater than or equal to 1"),
        ({"terms": [{"text": "cat"}], "k": 501}, 422, "less than or equal to 500"),
        ({"terms": [{"text": "cat"}], "offset": -1}, 422, "greater than or equal to 0"),
        ({"terms": [{"text": "cat", "weight": 0}]}, 422, "weight 0"),
        ({"terms": [{"text": "  "}]}, 422, "text is empty"),
        ({"terms": [{"text": "x"}] * 17}, 422, "at most 16 terms"),
        ({"terms": [{"text": "cat"}], "bogus": 1}, 422, "Extra inputs"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_detail(
    served: Served, body: dict[str, object], status: int, fragment: str
) -> None:
    response = served.client.post("/api/search", json=body)
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_weights_are_refused(served: Served, literal: str) -> None:
    raw = '{"terms": [{"text": "cat", "weight": LITERAL}]}'.replace("LITERAL", literal)
    response = served.client.post(
        "/api/search", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "finite" in response.text


def test_malformed_json_and_oversized_bodies(served: Served) -> None:
    broken = served.client.post(
        "/api/search", content="{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    big = {"terms": [{"image": "A" * (2 * 1024 * 1024)}]}
    response = served.client.post("/api/search", json=big)
    assert response.status_code == 413 and "1 MB limit" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"terms": [{"image": "'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"}]}'

    streamed = served.client.post(
        "/api/search", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def test_multipart_upload_search(served: Served) -> None:
    path, data = own_bytes(served, 7)
    response = served.client.post(
        "/api/search/upload",
        files=[("images", ("query.png", data, "image/png"))],
        data={"text": ["frog"], "text_weights": ["-0.2"], "k": "3"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["path"] == path
    bad = served.client.post(
        "/api/search/upload", files=[("images", ("x.png", b"not an image", "image/png"))]
    )
    assert bad.status_code == 422 and "not a recognised image" in bad.json()["detail"]
    mismatched = served.client.post(
        "/api/search/upload",
        files=[("images", ("q.png", data, "image/png"))],
        data={"image_weights": ["1", "2"]},
    )
    assert mismatched.status_code == 422
    nothing = served.client.post("/api/search/upload", data={"k": "3"})
    assert nothing.status_code == 422 and "at least one term" in nothing.json()["detail"]


def test_image_metadata(served: Served) -> None:
    hit = served.client.post("/api/search", json={"terms": [{"text": "x"}], "k": 1}).json()
    image_id = hit["results"][0]["id"]
    info = served.client.get(f"/api/images/{image_id}").json()
    assert info["id"] == image_id and info["state"] == "ok" and info["width"] > 0
    assert served.client.get("/api/images/424242").status_code == 404
    assert served.client.get("/api/images/not-a-number").status_code == 422


def test_status_and_failures(served: Served) -> None:
    status = served.client.get("/api/status").json()
    assert status["indexed"] == 40 and status["failed"] == len(served.corpus.broken)
    assert status["indexing"] is False and status["pending"] == 0
    assert status["dim"] == 32 and status["device"] == "cpu"
    assert status["model"].startswith("local-dir:")
    failures = served.client.get("/api/failures").json()
    assert failures["total"] == len(served.corpus.broken)
    assert {f["path"] for f in failures["failures"]} == set(served.corpus.broken)
    assert all(f["error"] for f in failures["failures"])
    assert served.client.get("/api/failures?limit=0").status_code == 422


def test_reindex_picks_up_a_new_file(served: Served) -> None:
    library = served.settings.library.path
    write_image(library / "late arrival.png", seed=4242)
    try:
        assert served.client.post("/api/reindex").status_code == 202
        served.wait_idle()
        data = (library / "late arrival.png").read_bytes()
        top = served.client.post(
            "/api/search", json={"terms": [{"image": b64(data)}], "k": 1}
        ).json()["results"][0]
        assert top["path"] == "late arrival.png"
    finally:
        (library / "late arrival.png").unlink()
        served.client.post("/api/reindex")
        served.wait_idle()
    assert served.client.get("/api/status").json()["indexed"] == 40


def test_original_project_query_format(served: Served) -> None:
    path, data = own_bytes(served, 11)
    response = served.client.post(
        "/api/mse", json={"text": [["cat", 0.1]], "images": [[b64(data), 1.0]], "top_k": 3}
    )
    assert response.status_code == 200
    results = response.json()
    assert len(results) == 3 and set(results[0]) == {"score", "file"}
    assert results[0]["file"] == path
    assert served.client.post("/api/mse", json={"top_k": 3}).status_code == 422
    nan = served.client.post(
        "/api/mse", content='{"text": [["cat", NaN]]}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422


def test_health_metrics_and_openapi(served: Served) -> None:
    assert served.client.get("/healthz").json() == {"status": "ok"}
    ready = served.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    served.client.post("/api/search", json={"terms": [{"text": "cat"}, {"image_id": 1}]})
    metrics = served.client.get("/metrics").text
    for name in (
        "memesearch_files_indexed",
        "memesearch_index_vectors 40.0",
        "memesearch_embed_batch_size_bucket",
        "memesearch_embed_seconds",
        'memesearch_query_terms_total{type="text"}',
        "memesearch_embed_queue_depth",
        "http_request_duration_seconds",
    ):
        assert name in metrics, name
    schema = served.client.get("/openapi.json").json()
    search = schema["paths"]["/api/search"]["post"]
    assert "422" in search["responses"] and "413" in search["responses"]
    term = schema["components"]["schemas"]["TermIn"]["properties"]
    assert set(term) == {"text", "image", "image_id", "embedding", "weight"}
    for route in (
        "/api/search/upload",
        "/api/images/{image_id}",
        "/api/status",
        "/api/failures",
        "/api/reindex",
        "/api/mse",
    ):
        assert route in schema["paths"]
    # Auth off and writable: the schema claims neither credentials nor refusals.
    assert "securitySchemes" not in schema["components"]
    for item in schema["paths"].values():
        for operation in item.values():
            assert "security" not in operation
            assert not {"401", "403"} & set(operation["responses"])


def test_scores_are_finite_cosines(served: Served) -> None:
    results = served.client.post("/api/search", json={"terms": [{"text": "cat"}], "k": 40})
    assert all(
        math.isfinite(r["score"]) and -1.0001 <= r["score"] <= 1.0001
        for r in results.json()["results"]
    )


def test_long_texts_are_refused_on_every_route_before_the_model(served: Served) -> None:
    """One client's megabyte of text must not hold the model thread for everyone."""
    huge = "meme " * 200_000  # 1 MB
    client = served.client
    multipart = client.post("/api/search/upload", data={"text": [huge, "cat"]})
    assert multipart.status_code == 422 and "at most 2,000" in multipart.json()["detail"]
    original = client.post("/api/mse", json={"text": [[huge, 1.0]]})
    assert original.status_code == 422 and "at most 2,000" in original.json()["detail"]
    page = client.get("/", params={"q": "x" * 5000})
    assert page.status_code == 422 and "at most 2,000" in page.text
    json_api = client.post("/api/search", json={"terms": [{"text": huge}]})
    assert json_api.status_code == 422
    assert client.post("/api/search", json={"terms": [{"text": "x" * 2000}]}).status_code == 200


def test_query_images_have_their_own_lower_pixel_cap(served: Served) -> None:
    """A tiny file may claim a huge picture: a query image over the query cap is refused early."""
    bomb = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(bomb, format="PNG")  # 60 MP in ~10 KB
    assert len(bomb.getvalue()) < 100_000
    payload = base64.b64encode(bomb.getvalue()).decode()
    response = served.client.post("/api/search", json={"terms": [{"image": payload}]})
    assert response.status_code == 422
    assert "over the limit of 50.0 MP" in response.json()["detail"]
    files = [("images", ("bomb.png", bomb.getvalue(), "image/png"))]
    assert served.client.post("/api/search/upload", files=files).status_code == 422


def test_readiness_says_when_the_model_is_stuck() -> None:
    assert readiness(0.2, 3) == (True, "the model answers (3 items waiting)")
    ready, detail = readiness(42.4, 120)
    assert not ready and detail == "no answer from the model for 42 s (120 items waiting)"
