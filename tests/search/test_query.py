"""Query terms: four small immutable kinds, checked before any model work."""

from __future__ import annotations

import dataclasses

import pytest

from memesearch.errors import QueryError
from memesearch.search.query import (
    EmbeddingTerm,
    ImageIdTerm,
    ImageTerm,
    Term,
    TextTerm,
    validate_terms,
)


def test_each_kind_names_itself_and_defaults_to_weight_one() -> None:
    terms: list[Term] = [TextTerm("cat"), ImageTerm(b"png"), ImageIdTerm(3), EmbeddingTerm((1.0,))]
    assert [term.kind for term in terms] == ["text", "image", "image_id", "embedding"]
    assert all(term.weight == 1.0 for term in terms)


def test_terms_are_immutable_and_an_embedding_holds_a_tuple_of_floats() -> None:
    term = EmbeddingTerm((1, 2, 3), -0.5)  # ints arrive from JSON
    assert term.values == (1.0, 2.0, 3.0) and all(type(v) is float for v in term.values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        term.weight = 1.0  # type: ignore[misc]
    assert EmbeddingTerm((0.5, 0.5)) == EmbeddingTerm((0.5, 0.5))  # comparable, hashable
    assert len({TextTerm("a"), TextTerm("a"), TextTerm("a", 2.0)}) == 2


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ([], "at least one term"),
        ([TextTerm("cat", float("nan"))], "term 1: weight must be a finite number"),
        ([TextTerm("cat"), TextTerm("  ")], "term 2: text is empty"),
        ([ImageTerm(b"")], "term 1: image is empty"),
        ([EmbeddingTerm((0.1, 0.2))], "term 1: embedding has 2 values, the model produces 4"),
        ([TextTerm("cat", 0.0), ImageIdTerm(1, 0.0)], "every term has weight 0"),
        ([TextTerm("x" * 2001)], "term 1: text has 2,001 characters, at most 2,000 are read"),
    ],
)
def test_validation_names_the_term_and_the_problem(terms: list[Term], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        validate_terms(terms, 4)


def test_valid_mixed_queries_pass() -> None:
    validate_terms(
        [TextTerm("cat"), TextTerm("cartoon", -0.5), ImageIdTerm(7, 0.7), EmbeddingTerm((0,) * 4)],
        4,
    )
