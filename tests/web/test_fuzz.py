"""Fuzzing the JSON API against its own OpenAPI schema: never a 5xx, always the documented shape."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, negative_data_rejection, positive_data_acceptance
from schemathesis.openapi import from_dict
from starlette.testclient import TestClient

from tests.web.conftest import Served, served_app

# Small and derandomized: the same examples on every run, the whole file in well under a minute.
EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # Generating whole requests is slow next to plain values, and slower still on a busy CI box.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
BASE_URL = "http://testserver"


class _TestClientAdapter(HTTPAdapter):
    """Hands each request schemathesis prepared to the TestClient: one app, one lifespan."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self._client = client

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send in-process and wrap the reply the way requests would have received it."""
        # Schemathesis passes json, data or files, which requests prepares as text or bytes.
        prepared = cast("bytes | str | None", request.body)
        body = prepared.encode() if isinstance(prepared, str) else prepared
        # Encoded as httpx itself would (ASCII), so that text and bytes values make one type.
        headers = [
            (name.encode("ascii"), value if isinstance(value, bytes) else value.encode("ascii"))
            for name, value in request.headers.items()
        ]
        reply = self._client.request(
            str(request.method),
            str(request.url),
            headers=headers,
            content=body or b"",
        )
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(reply.content),
            headers=urllib3.HTTPHeaderDict(reply.headers.multi_items()),
            status=reply.status_code,
            reason=reply.reason_phrase,
            version=11,
            preload_content=False,
        )
        return self.build_response(request, raw)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(tmp_path_factory.mktemp("fuzz"), tiny_model_dir, n_good=12)


@pytest.fixture(scope="module")
def api_schema(fuzzed: Served) -> Any:
    """Our own /openapi.json, as the running app publishes it."""
    return from_dict(fuzzed.client.get("/openapi.json").json())


@pytest.fixture(scope="module")
def session(fuzzed: Served) -> Iterator[requests.Session]:
    """A requests session whose every request goes to the running app in-process."""
    with requests.Session() as session:
        session.mount(BASE_URL, _TestClientAdapter(fuzzed.client))
        yield session


@dataclass(frozen=True)
class Operation:
    """A documented operation and how far the schema alone can tell a valid request."""

    method: str
    path: str
    inputs: bool = True  # False: nothing to make invalid, so there are no negative cases
    # True: validity also depends on what JSON Schema cannot say (base64 that must be an image,
    # an embedding of the model's dimension, at least one term across several fields), so a
    # schema-valid request may rightly get a 422 and only "schema-valid → 2xx" is not checked.
    opaque: bool = False
    # True: a multipart form, where every value is text on the wire, so a "number where a
    # string belongs" arrives as a perfectly good string and "schema-invalid → 4xx" cannot hold.
    form: bool = False
    examples: int = EXAMPLES

    def excluded_checks(self) -> list[CheckFunction]:
        """The checks this operation's schema cannot support (see the fields above)."""
        excluded = [positive_data_acceptance] if self.opaque else []
        return excluded + ([negative_data_rejection] if self.form else [])


# Every documented operation; a new one must be added here (the first test says so).
OPERATIONS = (
    Operation("POST", "/api/search", opaque=True),
    Operation("POST", "/api/search/upload", opaque=True, form=True),
    Operation("GET", "/api/images/{image_id}"),
    Operation("GET", "/api/status", inputs=False),
    Operation("GET", "/api/failures"),
    # A reindex rescans the library: a few calls show its shape, more would only cost time.
    Operation("POST", "/api/reindex", inputs=False, examples=3),
    Operation("POST", "/api/mse", opaque=True),
)
CASES = [
    pytest.param(op, mode, id=f"{op.method} {op.path} {mode}")
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if op.inputs or mode is GenerationMode.POSITIVE
]


def test_every_documented_operation_is_fuzzed(api_schema: Any) -> None:
    documented = {
        (method.upper(), path)
        for path, methods in api_schema.raw_schema["paths"].items()
        for method in methods
    }
    assert documented == {(op.method, op.path) for op in OPERATIONS}


@pytest.mark.parametrize(("op", "mode"), CASES)
def test_operation_conforms_to_its_schema(
    api_schema: Any, session: requests.Session, fuzzed: Served, op: Operation, mode: GenerationMode
) -> None:
    """No 5xx; documented status, content type, headers and body; invalid input refused."""
    excluded = op.excluded_checks()

    @settings(FUZZ, max_examples=op.examples)
    @given(case=api_schema[op.path][op.method].as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        case.call_and_validate(session=session, base_url=BASE_URL, excluded_checks=excluded)

    run()
    fuzzed.wait_idle()


# ---- /api/search bodies schemathesis is unlikely to generate -------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def post_search(client: TestClient, body: object) -> tuple[int, object]:
    """POST a body; the status and the decoded JSON (the test fails if the body is not JSON)."""
    response = client.post("/api/search", json=body)
    return response.status_code, response.json()


def assert_handled(status: int, body: object) -> None:
    """A 200 with results, or a 4xx that says what is wrong."""
    assert status == 200 or 400 <= status < 500, (status, body)
    assert isinstance(body, dict)
    if status == 200:
        assert isinstance(body["results"], list)
    else:
        assert body["detail"]


@FUZZ
@given(weight=JSON_VALUES)
def test_any_json_value_as_a_weight(fuzzed: Served, weight: object) -> None:
    status, body = post_search(fuzzed.client, {"terms": [{"text": "cat", "weight": weight}]})
    assert_handled(status, body)


@FUZZ
@given(
    k=st.integers(min_value=-(2**80), max_value=2**80),
    offset=st.integers(min_value=-(2**80), max_value=2**80),
)
def test_huge_or_negative_k_and_offset(fuzzed: Served, k: int, offset: int) -> None:
    status, body = post_search(
        fuzzed.client, {"terms": [{"text": "cat"}], "k": k, "offset": offset}
    )
    assert_handled(status, body)
    if status == 200:
        assert isinstance(body, dict) and len(body["results"]) <= k


@FUZZ
@given(junk=JSON_VALUES)
def test_junk_anywhere_in_the_body(fuzzed: Served, junk: object) -> None:
    for body in (
        junk,
        {"terms": junk},
        {"terms": [junk]},
        {"terms": [{"text": "a"}], "filters": junk},
    ):
        assert_handled(*post_search(fuzzed.client, body))


@FUZZ
@given(depth=st.integers(min_value=1, max_value=3000))
def test_deeply_nested_junk(fuzzed: Served, depth: int) -> None:
    raw = '{"terms": ' + "[" * depth + "]" * depth + "}"
    response = fuzzed.client.post(
        "/api/search", content=raw, headers={"content-type": "application/json"}
    )
    assert_handled(response.status_code, response.json())


@FUZZ
@given(text=st.text(min_size=0, max_size=3000))
def test_unicode_text_terms_of_any_length(fuzzed: Served, text: str) -> None:
    status, body = post_search(fuzzed.client, {"terms": [{"text": text}]})
    assert_handled(status, body)
    if status == 200:
        assert isinstance(body, dict) and body["results"]


@FUZZ
@given(data=st.binary(max_size=2000), data_url=st.booleans())
def test_base64_of_random_bytes_as_an_image(fuzzed: Served, data: bytes, data_url: bool) -> None:
    encoded = base64.b64encode(data).decode()
    image = f"data:image/png;base64,{encoded}" if data_url else encoded
    status, body = post_search(fuzzed.client, {"terms": [{"image": image}]})
    assert_handled(status, body)


@FUZZ
@given(
    files=st.lists(st.binary(max_size=500), max_size=3),
    weights=st.lists(
        st.sampled_from(["1", "-0.5", "0", "nan", "-inf", "1e999", "1e308", "x", ""]), max_size=3
    ),
    text=st.lists(st.text(max_size=30), max_size=3),
)
def test_multipart_uploads_of_random_bytes(
    fuzzed: Served, files: list[bytes], weights: list[str], text: list[str]
) -> None:
    response = fuzzed.client.post(
        "/api/search/upload",
        files=[("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)],
        data={"image_weights": weights, "text": text},
    )
    assert_handled(response.status_code, response.json())


@FUZZ
@given(raw=st.binary(max_size=300))
def test_bytes_that_are_not_json(fuzzed: Served, raw: bytes) -> None:
    response = fuzzed.client.post(
        "/api/search", content=raw, headers={"content-type": "application/json"}
    )
    if raw.strip() and _is_json(raw):
        assert response.status_code < 500
    else:  # 400: not even text (invalid UTF-8), 422: text but not JSON
        assert response.status_code in (400, 422)
    assert response.json()["detail"]


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


# ---- regressions the fuzzer found -----------------------------------------------------------

TOO_BIG = 2**63  # one past the largest SQL integer: used to reach SQLite and fail with a 500


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", f"/api/images/{TOO_BIG}", None),
        ("POST", "/api/search", {"terms": [{"image_id": TOO_BIG}]}),
        ("GET", f"/api/failures?offset={TOO_BIG}", None),
        ("GET", "/api/failures?limit=0", None),
        ("POST", "/api/search/upload", {"text": ["cat"], "text_weights": ["1e308"]}),
        ("POST", "/api/mse", {"text": [["cat", 1e308]]}),
    ],
)
def test_out_of_range_numbers_get_a_422_with_issues(
    fuzzed: Served, method: str, url: str, body: dict[str, object] | None
) -> None:
    if url.endswith("/upload"):
        response = fuzzed.client.post(url, data=body)
    else:
        response = fuzzed.client.request(method, url, json=body)
    assert response.status_code == 422, response.text
    (issue,) = response.json()["detail"]
    assert set(issue) == {"loc", "msg", "type"} and "than or equal to" in issue["msg"]


def test_the_largest_possible_id_is_simply_not_found(fuzzed: Served) -> None:
    largest = 2**63 - 1
    assert fuzzed.client.get(f"/api/images/{largest}").status_code == 404
    term = {"terms": [{"image_id": largest}]}
    assert fuzzed.client.post("/api/search", json=term).status_code == 404


@pytest.mark.parametrize(
    "url", [f"/thumbs/{TOO_BIG}.webp", f"/?t=id:1:{TOO_BIG}", f"/results?t=id:1:{TOO_BIG}"]
)
def test_out_of_range_ids_in_pages_and_thumbnails_are_not_found(fuzzed: Served, url: str) -> None:
    assert fuzzed.client.get(url).status_code in (404, 422)


def test_a_body_that_is_not_utf8_gets_a_documented_400(fuzzed: Served) -> None:
    response = fuzzed.client.post(
        "/api/search", content=b'{"terms": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["detail"]
    documented = fuzzed.client.get("/openapi.json").json()["paths"]["/api/search"]["post"]
    assert documented["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
