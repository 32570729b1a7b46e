"""Walk the library folder and list candidate image files; no decoding, no database."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from memesearch.errors import LibraryError


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file as the scanner saw it; `path` is relative to the library root, '/'-separated."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class RejectedFile:
    """An image file that cannot be indexed under its name; `info.path` is a printable version."""

    info: FileInfo
    reason: str


@dataclass(slots=True)
class ScanResult:
    """Every image file found, plus the places that could not be read and why."""

    files: dict[str, FileInfo] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    # Files whose path is not valid UTF-8, by a printable path (undecodable bytes as \xNN): the
    # indexer lists them as failed so the user can find and rename them. `problems` names them
    # too, for callers that only show the scan.
    rejected: dict[str, RejectedFile] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What counts as part of the library."""

    extensions: frozenset[str]
    follow_symlinks: bool = False
    include_hidden: bool = False
    exclude: tuple[Path, ...] = ()


Found = FileInfo | RejectedFile | str  # a file, a file refused for its name, or a problem


def scan_library(root: Path, options: ScanOptions) -> ScanResult:
    """List every image file under `root`, tolerating loops, unreadable folders and odd names.

    Raises LibraryError when the root itself is missing or unreadable.
    """
    result = ScanResult()
    root = root.resolve()
    # Never read an unreadable root as "everything was deleted": an unmounted drive must not
    # empty the index.
    try:
        root_stat = root.stat()
        if not stat.S_ISDIR(root_stat.st_mode):
            raise LibraryError(f"library path {root} is not a folder")
        with os.scandir(root):
            pass
    except OSError as exc:
        raise LibraryError(f"library folder {root} cannot be read: {exc.strerror}") from exc
    excluded = {path.resolve() for path in options.exclude}
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    for rel_path, found in _walk(root, "", options, visited, excluded):
        if isinstance(found, FileInfo):
            result.files[rel_path] = found
        elif isinstance(found, RejectedFile):
            result.problems.append((rel_path, found.reason))
            result.rejected[rel_path] = found
        else:
            result.problems.append((rel_path, found))
    # A real file literally named like the printable version of a bad name keeps its place.
    for rel_path in result.rejected.keys() & result.files.keys():
        del result.rejected[rel_path]
    return result


def _walk(
    folder: Path,
    prefix: str,
    options: ScanOptions,
    visited: set[tuple[int, int]],
    excluded: set[Path],
) -> Iterator[tuple[str, Found]]:
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        yield prefix or ".", f"folder cannot be read: {exc.strerror}"
        return
    for entry in sorted(entries, key=lambda item: item.name):
        if not options.include_hidden and entry.name.startswith("."):
            continue
        rel_path = prefix + entry.name
        found = _visit(entry, rel_path, options, visited, excluded)
        if _valid_name(rel_path):
            yield from found
        else:
            bad = "file" if not _valid_name(entry.name) else "folder"
            yield from _reject(found, f"{bad} name is not valid UTF-8")


def _visit(
    entry: os.DirEntry[str],
    rel_path: str,
    options: ScanOptions,
    visited: set[tuple[int, int]],
    excluded: set[Path],
) -> Iterator[tuple[str, Found]]:
    try:
        if entry.is_symlink() and not options.follow_symlinks:
            return
        is_dir = entry.is_dir()
        st = entry.stat() if (is_dir or _is_image_name(entry.name, options)) else None
    except OSError as exc:
        yield rel_path, f"cannot be read: {exc.strerror}"
        return
    if st is None:
        return
    if is_dir:
        key = (st.st_dev, st.st_ino)
        if key in visited or Path(entry.path).resolve() in excluded:
            return  # a symlink loop or a folder seen through another link
        visited.add(key)
        yield from _walk(Path(entry.path), rel_path + "/", options, visited, excluded)
    elif stat.S_ISREG(st.st_mode):
        yield rel_path, FileInfo(path=rel_path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _reject(found: Iterator[tuple[str, Found]], reason: str) -> Iterator[tuple[str, Found]]:
    """Files under a name that is not UTF-8, refused under a printable version of it."""
    for rel_path, item in found:
        shown = _printable(rel_path)
        if isinstance(item, FileInfo):
            yield shown, RejectedFile(replace(item, path=shown), reason)
        else:  # a problem, or a file a folder further down already refused
            yield shown, item


def _is_image_name(name: str, options: ScanOptions) -> bool:
    return os.path.splitext(name)[1].lower() in options.extensions


def _valid_name(rel_path: str) -> bool:
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _printable(rel_path: str) -> str:
    return os.fsencode(rel_path).decode("utf-8", errors="backslashreplace")
