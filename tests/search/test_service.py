"""Search against an exact brute-force reference computed here from the same model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from memesearch.config import Settings, load_settings
from memesearch.errors import ImageDecodeError, QueryError, UnknownImageError
from memesearch.images.decode import DecodeLimits, PreprocessSpec
from memesearch.images.prepare import prepare_file
from memesearch.search.query import EmbeddingTerm, ImageIdTerm, ImageTerm, Term, TextTerm
from memesearch.search.service import SearchHit, SearchPage
from memesearch.services import open_services
from memesearch.testing import write_config
from tests.corpus import make_corpus
from tests.support import index_once

TEXTS = ["a cat wearing sunglasses", "red frog", "drake meme", "blue sky at night"]


class Reference:
    """The tiny model run directly through open_clip: the ground truth for rankings."""

    def __init__(self, model_dir: Path, root: Path, paths: list[str]) -> None:
        spec = f"local-dir:{model_dir}"
        self.model, _, _ = open_clip.create_model_and_transforms(spec)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(spec)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        self.spec = PreprocessSpec.from_open_clip(cfg)
        self.paths = paths
        pixels = np.stack([prepare_file(root / p, self.spec, DecodeLimits()).pixels for p in paths])
        # Rounded as the store keeps them: search is exact over the stored (float16) vectors.
        self.images = self._images(pixels).astype(np.float16).astype(np.float32)

    @torch.inference_mode()
    def _images(self, pixels: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        batch = (batch - 0.5) / 0.5
        vectors: np.ndarray = self.model.encode_image(batch, normalize=True).numpy()
        return vectors

    @torch.inference_mode()
    def text(self, text: str) -> np.ndarray:
        vectors: np.ndarray = self.model.encode_text(self.tokenizer([text]), normalize=True).numpy()
        vector: np.ndarray = vectors[0]
        return vector

    def ranking(self, query: np.ndarray) -> tuple[list[str], np.ndarray]:
        query = query / np.linalg.norm(query)
        scores = self.images @ query
        order = np.argsort(-scores, kind="stable")
        return [self.paths[i] for i in order], scores[order]


Indexed = tuple[Settings, list[str], Reference]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Indexed:
    root = tmp_path_factory.mktemp("search")
    library = root / "memes"
    good = make_corpus(library, n_good=60).good
    config = write_config(
        root / "config.toml",
        {
            "library": {"path": str(library), "max_file_mb": 2},
            "database": {"url": f"sqlite:///{root / 'db.sqlite'}"},
            "model": {"name": f"local-dir:{tiny_model_dir}"},
            "indexer": {"workers": 2},
        },
    )
    settings = load_settings(config)
    asyncio.run(index_once(settings))
    return settings, good, Reference(tiny_model_dir, library, good)


async def search(
    settings: Settings, terms: Sequence[Term], k: int = 20, offset: int = 0
) -> SearchPage:
    async with open_services(settings) as services:
        return await (await services.search_service()).search(terms, k=k, offset=offset)


@pytest.mark.parametrize("text", TEXTS)
async def test_text_search_equals_brute_force_reference(indexed: Indexed, text: str) -> None:
    settings, _, reference = indexed
    page = await search(settings, [TextTerm(text)], k=15)
    expected_paths, expected_scores = reference.ranking(reference.text(text))
    assert [hit.path for hit in page.hits] == expected_paths[:15]
    np.testing.assert_allclose([h.score for h in page.hits], expected_scores[:15], atol=1e-4)


async def test_weighted_mix_equals_reference_and_negative_weight_pushes_down(
    indexed: Indexed,
) -> None:
    settings, _, reference = indexed
    cat, frog = reference.text(TEXTS[0]), reference.text(TEXTS[1])
    k = len(reference.paths)
    plain = await search(settings, [TextTerm(TEXTS[0])], k=k)
    mixed = await search(settings, [TextTerm(TEXTS[0]), TextTerm(TEXTS[1], -0.8)], k=k)
    expected, _ = reference.ranking(cat - 0.8 * frog)
    assert [h.path for h in mixed.hits] == expected
    frogs, _ = reference.ranking(frog)
    rank = {h.path: i for i, h in enumerate(plain.hits)}
    rank_mixed = {h.path: i for i, h in enumerate(mixed.hits)}
    most_froggy = frogs[:5]
    assert sum(rank_mixed[p] for p in most_froggy) > sum(rank[p] for p in most_froggy)
    assert all(rank_mixed[p] >= rank[p] for p in frogs[:1])


async def test_an_image_term_ranks_its_own_file_first(indexed: Indexed) -> None:
    settings, good, _ = indexed
    for path in (good[5], good[17], "photos/big photo.jpg"):
        data = (settings.library.path / path).read_bytes()
        page = await search(settings, [ImageTerm(data)], k=3)
        assert page.hits[0].path == path
        assert page.hits[0].score == pytest.approx(1.0, abs=1e-3)  # stored as float16


async def test_image_id_and_embedding_terms(indexed: Indexed) -> None:
    settings, good, reference = indexed
    first = (
        await search(settings, [ImageTerm((settings.library.path / good[9]).read_bytes())], k=1)
    ).hits[0]
    by_id = await search(settings, [ImageIdTerm(first.id)], k=1)
    assert by_id.hits[0].id == first.id
    vector = reference.images[reference.paths.index(good[9])]
    by_vector = await search(settings, [EmbeddingTerm(tuple(vector.tolist()))], k=1)
    assert by_vector.hits[0].id == first.id


async def test_paging_walks_the_same_ranking_and_ends(indexed: Indexed) -> None:
    settings, good, _ = indexed
    terms = [TextTerm(TEXTS[2])]
    full = await search(settings, terms, k=len(good))
    assert full.next_offset is None
    pages: list[SearchHit] = []
    offset: int | None = 0
    while offset is not None:
        page = await search(settings, terms, k=7, offset=offset)
        pages.extend(page.hits)
        offset = page.next_offset
    assert [h.id for h in pages] == [h.id for h in full.hits]
    assert full.total_indexed == len(good)
    beyond = await search(settings, terms, k=5, offset=len(good) + 10)
    assert beyond.hits == [] and beyond.next_offset is None


@pytest.mark.parametrize(
    ("terms", "error", "message"),
    [
        ([], QueryError, "at least one term"),
        ([TextTerm("cat", float("nan"))], QueryError, "finite"),
        ([TextTerm("cat", float("inf"))], QueryError, "finite"),
        ([TextTerm("   ")], QueryError, "text is empty"),
        ([TextTerm("cat", 0.0)], QueryError, "weight 0"),
        ([EmbeddingTerm((0.1,) * 5)], QueryError, "5 values, the model produces 32"),
        ([EmbeddingTerm((0.0,) * 32)], QueryError, "all zeros"),
        ([EmbeddingTerm((float("nan"),) * 32)], QueryError, "NaN"),
        ([TextTerm("cat"), TextTerm("cat", -1.0)], QueryError, "cancel"),
        ([ImageTerm(b"definitely not an image")], ImageDecodeError, "term 1: not a recognised"),
        ([ImageIdTerm(987_654)], UnknownImageError, "987654"),
    ],
)
async def test_bad_queries_raise_clear_domain_errors(
    indexed: Indexed, terms: list[Term], error: type[Exception], message: str
) -> None:
    settings, _, _ = indexed
    with pytest.raises(error, match=message):
        await search(settings, terms)


@pytest.mark.parametrize(("k", "offset"), [(0, 0), (501, 0), (10, -1)])
async def test_paging_limits(indexed: Indexed, k: int, offset: int) -> None:
    settings, _, _ = indexed
    with pytest.raises(QueryError):
        await search(settings, [TextTerm("cat")], k=k, offset=offset)


async def test_another_models_vectors_are_never_searched(
    indexed: Indexed, other_model_dir: Path
) -> None:
    settings, _, _ = indexed
    other = settings.model_copy(
        update={"model": settings.model.model_copy(update={"name": f"local-dir:{other_model_dir}"})}
    )
    page = await search(other, [TextTerm("cat")])
    assert page.hits == [] and page.total_indexed == 0


async def test_concurrent_searches_share_faiss_scans(indexed: Indexed) -> None:
    settings, _, _ = indexed
    async with open_services(settings) as services:
        service = await services.search_service()
        before = service.scans
        pages = await asyncio.gather(*(service.search([TextTerm(text)], k=5) for text in TEXTS * 4))
        assert service.scans - before < len(pages)  # 16 queries, fewer FAISS scans
        solo = await service.search([TextTerm(TEXTS[1])], k=5)
    assert [h.id for h in pages[1].hits] == [h.id for h in solo.hits]
