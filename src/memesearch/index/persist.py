"""The index file kept next to the database: a stamped FAISS index that loads in seconds.

Layout: a magic line, an 8-byte length, a JSON stamp (format, the database's id, model,
dimension, kind, size and the store generation the index reflects), then FAISS's own
serialisation, then the BLAKE3 digest of that serialisation: bytes flipped on disk would load
without complaint and answer wrongly for good, so a file whose data does not match is rebuilt.
The file is written to a temporary name and renamed into place, so a crash leaves
the old file or the new one. A stamp whose generation differs from the store's means writes
happened that the file lacks; one with another database id was built from another database
(e.g. one deleted and indexed anew, which reaches the same generations again).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, get_type_hints

import faiss
from blake3 import blake3

from memesearch.index.ivf import is_ivf
from memesearch.index.vector_index import IndexKind, IndexState, VectorIndex

log = logging.getLogger(__name__)

MAGIC = b"memesearch faiss index\n"
FORMAT = 3  # 2: the stamp names the database (store_id); 3: a digest follows the data
_LENGTH = struct.Struct("<Q")
_MAX_STAMP = 1 << 20
_DIGEST_SIZE = 32


@dataclass(frozen=True, slots=True)
class IndexStamp:
    """What a saved index holds, readable without loading it."""

    format: int
    store_id: str  # the database the index was built from (`Repository.store_id`)
    model_id: str
    dim: int
    kind: str
    count: int
    generation: int
    trained_for: int


def save_index(
    path: Path, index: VectorIndex, *, store_id: str, model_id: str
) -> IndexStamp | None:
    """Write `index` to `path` atomically; None (nothing written) if its generation is unknown."""
    if index.generation is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    stamps: list[IndexStamp] = []

    def header(state: IndexState) -> None:
        if state.generation is None:
            raise _Unknown
        stamp = IndexStamp(
            format=FORMAT,
            store_id=store_id,
            model_id=model_id,
            dim=index.dim,
            kind=str(state.kind),
            count=state.count,
            generation=state.generation,
            trained_for=state.trained_for,
        )
        encoded = json.dumps(asdict(stamp)).encode()
        file.write(MAGIC + _LENGTH.pack(len(encoded)) + encoded)
        stamps.append(stamp)

    digest = blake3()

    def write_data(chunk: bytes) -> int:
        if stamps:  # after the header: FAISS's data, which the digest covers
            digest.update(chunk)
        return file.write(chunk)

    try:
        with open(temporary, "wb") as file:
            writer = faiss.PyCallbackIOWriter(write_data)  # type: ignore[attr-defined]
            index.write(writer, header)
            del writer  # flushes what FAISS still buffers
            file.write(digest.digest())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except _Unknown:
        temporary.unlink(missing_ok=True)
        return None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return stamps[0]


def read_stamp(path: Path) -> IndexStamp | None:
    """The stamp of the index file at `path`; None if there is none or it is not one of ours."""
    try:
        with open(path, "rb") as file:
            return _read_stamp(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring index file %s: %s", path, exc)
        return None


def load_index(path: Path) -> tuple[IndexStamp, Any]:
    """The stamp and the FAISS index saved at `path` (raises OSError/ValueError if unreadable)."""
    with open(path, "rb") as file:
        stamp = _read_stamp(file)
        digest = blake3()

        def read_data(size: int) -> bytes:
            chunk = file.read(size)
            digest.update(chunk)
            return chunk

        try:
            reader = faiss.PyCallbackIOReader(read_data)  # type: ignore[attr-defined]
            index = faiss.read_index(reader)
        except RuntimeError as exc:  # FAISS reports truncated or corrupt data this way
            raise ValueError(f"corrupt index data ({exc})") from exc
        except MemoryError as exc:  # a damaged list size asks for an absurd allocation
            raise ValueError("corrupt index data (impossible sizes)") from exc
        if file.read(_DIGEST_SIZE + 1) != digest.digest():  # and nothing after it
            raise ValueError("corrupt index data (its digest does not match)")
    kind = IndexKind.IVF if is_ivf(index) else IndexKind.FLAT
    if index.d != stamp.dim or index.ntotal != stamp.count or kind != stamp.kind:
        raise ValueError("index data does not match its stamp")
    return stamp, index


def _read_stamp(file: BinaryIO) -> IndexStamp:
    if file.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a memesearch index file")
    (length,) = _LENGTH.unpack(file.read(_LENGTH.size).ljust(_LENGTH.size, b"\0"))
    if length > _MAX_STAMP:
        raise ValueError("damaged stamp")
    try:
        fields = json.loads(file.read(length))
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise ValueError(f"damaged stamp ({exc})") from exc
    if not isinstance(fields, dict):
        raise ValueError("damaged stamp")
    if fields.get("format") != FORMAT:
        raise ValueError(f"index file format {fields.get('format')!r}, this version reads {FORMAT}")
    types = get_type_hints(IndexStamp)
    if fields.keys() != types.keys() or any(type(fields[k]) is not t for k, t in types.items()):
        raise ValueError("damaged stamp (unexpected fields)")
    stamp = IndexStamp(**fields)
    counts = (stamp.count, stamp.generation, stamp.trained_for)
    if stamp.kind not in set(IndexKind) or stamp.dim < 1 or min(counts) < 0:
        raise ValueError("damaged stamp (impossible values)")
    return stamp


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class _Unknown(Exception):
    """The index's generation became unknown between the check and the write."""
