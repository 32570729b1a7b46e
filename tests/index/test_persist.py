"""The saved index file: round trips, its stamp, damaged or foreign files, atomic saves."""

from __future__ import annotations

import json
import resource
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import pytest

from memesearch.index import IndexKind, VectorIndex
from memesearch.index.ivf import train_ivf
from memesearch.index.persist import MAGIC, IndexStamp, load_index, read_stamp, save_index
from memesearch.testing import clustered_vectors
from tests.support import index_ids, remove_ids

DIM = 16
VECTORS = np.concatenate(list(clustered_vectors(1500, DIM, clusters=50, seed=4)))
QUERIES = np.concatenate(list(clustered_vectors(30, DIM, clusters=50, seed=4, draw_seed=2)))


def make_index(kind: IndexKind, *, generation: int | None = 7, count: int = 1500) -> VectorIndex:
    trained = train_ivf(DIM, VECTORS, 1500) if kind is IndexKind.IVF else None
    index = VectorIndex(DIM, index=trained, generation=generation, trained_for=1500)
    index.add(np.arange(count) * 2 + 1, VECTORS[:count])
    return index


@pytest.fixture(scope="module", params=list(IndexKind))
def kind(request: pytest.FixtureRequest) -> IndexKind:
    return IndexKind(request.param)


@pytest.fixture(scope="module")
def saved(kind: IndexKind, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "index.faiss"
    assert save_index(path, make_index(kind), store_id="store-a", model_id="model-a") is not None
    return path


def test_a_loaded_index_answers_exactly_like_the_saved_one(kind: IndexKind, tmp_path: Path) -> None:
    index = make_index(kind)
    remove_ids(index, [1, 3, 5])  # removals must survive the round trip too
    stamp = save_index(tmp_path / "index.faiss", index, store_id="store-a", model_id="model-a")
    assert stamp is not None and read_stamp(tmp_path / "index.faiss") == stamp
    loaded_stamp, faiss_index = load_index(tmp_path / "index.faiss")
    loaded = VectorIndex(DIM, index=faiss_index)
    assert loaded_stamp == stamp and loaded.kind is kind and len(loaded) == 1497
    for k in (1, 10, 100):
        expected, got = index.search(QUERIES, k), loaded.search(QUERIES, k)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    assert sorted(index_ids(loaded).tolist()) == sorted(index_ids(index).tolist())
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temporary left


def test_the_stamp_says_what_the_file_holds(kind: IndexKind, saved: Path) -> None:
    assert read_stamp(saved) == IndexStamp(
        format=3,
        store_id="store-a",
        model_id="model-a",
        dim=DIM,
        kind=str(kind),
        count=1500,
        generation=7,
        trained_for=1500,
    )


def test_an_index_of_unknown_generation_is_not_saved(tmp_path: Path, saved: Path) -> None:
    target = tmp_path / "index.faiss"
    assert (
        save_index(
            target, make_index(IndexKind.FLAT, generation=None), store_id="store-a", model_id="m"
        )
        is None
    )
    assert not target.exists()
    target.write_bytes(saved.read_bytes())
    assert (
        save_index(
            target, make_index(IndexKind.FLAT, generation=None), store_id="store-a", model_id="m"
        )
        is None
    )
    assert target.read_bytes() == saved.read_bytes() and len(list(tmp_path.iterdir())) == 1


def stamped(fields: dict[str, object], data: bytes = b"") -> bytes:
    encoded = json.dumps(fields).encode()
    return MAGIC + struct.pack("<Q", len(encoded)) + encoded + data


def split(file: bytes) -> tuple[dict[str, object], bytes]:
    """A saved file's stamp fields and the FAISS data after them."""
    (length,) = struct.unpack_from("<Q", file, len(MAGIC))
    start = len(MAGIC) + 8
    return json.loads(file[start : start + length]), file[start + length :]


def with_stamp(**changes: object) -> Callable[[bytes], bytes]:
    def rewrite(file: bytes) -> bytes:
        fields, data = split(file)
        return stamped({**fields, **changes}, data)

    return rewrite


def raw_faiss(_: bytes) -> bytes:
    return bytes(faiss.serialize_index(faiss.IndexFlatIP(DIM)))


def without(name: str) -> Callable[[bytes], bytes]:
    def rewrite(file: bytes) -> bytes:
        fields, data = split(file)
        return stamped({k: v for k, v in fields.items() if k != name}, data)

    return rewrite


def other_kind(file: bytes) -> bytes:
    return with_stamp(kind="flat" if split(file)[0]["kind"] == "ivf" else "ivf")(file)


BAD_STAMPS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda file: b"",
    "text file": lambda file: b"just some notes\n" * 100,
    "bare FAISS index": lambda file: bytes(faiss.serialize_index(faiss.IndexFlatIP(DIM))),
    "cut in the magic": lambda file: file[:10],
    "cut in the stamp": lambda file: file[: len(MAGIC) + 20],
    "garbled stamp": lambda file: file[: len(MAGIC) + 9] + b"\xff\xfe" + file[len(MAGIC) + 11 :],
    "huge stamp length": lambda file: MAGIC + struct.pack("<Q", 2**60) + file[len(MAGIC) + 8 :],
    "stamp not an object": lambda file: stamped([1, 2], split(file)[1]),  # type: ignore[arg-type]
    "newer format": with_stamp(format=4),
    "older format, without a digest": with_stamp(format=2),
    "older format, without the database id": lambda file: with_stamp(format=1)(
        without("store_id")(file)
    ),
    "missing field": without("trained_for"),
    "unknown kind": with_stamp(kind="hnsw"),
    "count as text": with_stamp(count="1500"),
    "negative generation": with_stamp(generation=-1),
}
BAD_DATA: dict[str, Callable[[bytes], bytes]] = {
    "cut after the stamp": lambda file: file[: len(file) - len(split(file)[1])],
    "cut in the data": lambda file: file[: len(file) // 2],
    "one byte short": lambda file: file[:-1],
    "stamp counts other data": with_stamp(count=12),
    "stamp names the other kind": other_kind,
    "stamp of another dimension": with_stamp(dim=DIM * 2),
    "a byte flipped in the data": lambda file: flip(file, len(file) - 4000),
    "a byte flipped in the digest": lambda file: flip(file, len(file) - 1),
    "bytes after the digest": lambda file: file + b"\0",
}


def flip(file: bytes, at: int) -> bytes:
    """`file` with one byte changed, as a bad sector or a stray write leaves it."""
    return file[:at] + bytes([file[at] ^ 0x40]) + file[at + 1 :]


@pytest.mark.parametrize("damage", list(BAD_STAMPS))
def test_a_file_without_a_sound_stamp_is_ignored(damage: str, saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    path.write_bytes(BAD_STAMPS[damage](saved.read_bytes()))
    assert read_stamp(path) is None
    with pytest.raises(ValueError):
        load_index(path)


@pytest.mark.parametrize("damage", list(BAD_DATA))
def test_damaged_index_data_is_refused(damage: str, saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    path.write_bytes(BAD_DATA[damage](saved.read_bytes()))
    assert read_stamp(path) is not None  # the stamp alone cannot tell
    with pytest.raises(ValueError):
        load_index(path)


@contextmanager
def address_space_limit(headroom: int) -> Iterator[None]:
    """Allocations of more than about `headroom` bytes fail, whatever memory the machine has."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs /proc/self/statm")
    in_use = int(statm.read_text().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + headroom if hard == resource.RLIM_INFINITY else min(in_use + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_an_absurd_cell_size_is_refused_not_allocated(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    save_index(path, make_index(IndexKind.IVF), store_id="store-a", model_id="model-a")
    damaged = bytearray(path.read_bytes())
    cells = damaged.find(b"ilar")  # inverted lists: nlist, code_size, "full", sizes[nlist]
    struct.pack_into("<Q", damaged, cells + 4 + 8 + 8 + 4 + 8, 2**31)
    path.write_bytes(bytes(damaged))
    with address_space_limit(2**30), pytest.raises(ValueError, match="corrupt index data"):
        load_index(path)


def test_a_missing_file_has_no_stamp(tmp_path: Path) -> None:
    assert read_stamp(tmp_path / "nothing.faiss") is None
    with pytest.raises(OSError):
        load_index(tmp_path / "nothing.faiss")
    assert read_stamp(tmp_path) is None  # a folder where the file should be


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes fail with EFBIG, as they would on a full disk."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    capped = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (capped, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_save_that_fails_midway_leaves_the_previous_file(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    path.write_bytes(saved.read_bytes())
    bigger = make_index(IndexKind.FLAT, generation=8)
    bigger.add(np.arange(1500) * 2 + 10_000, VECTORS)
    with file_size_limit(saved.stat().st_size // 2), pytest.raises(OSError):
        save_index(path, bigger, store_id="store-a", model_id="model-a")
    assert path.read_bytes() == saved.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # the partial file is gone
    stamp, faiss_index = load_index(path)
    assert stamp.generation == 7 and faiss_index.ntotal == 1500
