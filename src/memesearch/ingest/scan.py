"""Walk the library folder and list candidate image files; no decoding, no database."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from memesearch.errors import LibraryError
from memesearch.records import FileInfo


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
    # Files and folders that could not be read (permissions, I/O errors): what the store knows
    # at or below them is unknown, not gone, and must be left as it is.
    unknown: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What counts as part of the library."""

    extensions: frozenset[str]
    follow_symlinks: bool = False
    include_hidden: bool = False
    exclude: tuple[Path, ...] = ()


def scan_library(root: Path, options: ScanOptions) -> ScanResult:
    """List every image file under `root`, tolerating loops, unreadable folders and odd names.

    Raises LibraryError when the root itself is missing or unreadable.
    """
    root = root.resolve()
    root_stat = _readable_root(root)
    walk = _Walk(options, {path.resolve() for path in options.exclude})
    walk.visited.add((root_stat.st_dev, root_stat.st_ino))
    walk.folder(str(root), "", None)
    return walk.finish()


def scan_paths(root: Path, options: ScanOptions, scope: Iterable[str]) -> ScanResult:
    """What a full scan would find at or below each path of `scope`, and nothing else.

    `scope` holds '/'-separated paths relative to `root` (see `normalize_scope`): a file, a
    folder (walked like the library), or a path that no longer exists (nothing found). A path
    that a full scan would not enter (hidden, excluded, behind a symlink that is not followed)
    finds nothing too, exactly like a full scan. Raises LibraryError like `scan_library`.
    """
    root = root.resolve()
    root_stat = _readable_root(root)
    walk = _Walk(options, {path.resolve() for path in options.exclude})
    walk.visited.add((root_stat.st_dev, root_stat.st_ino))
    for rel_path in scope:
        walk.path(root, rel_path)
    return walk.finish()


def within(path: str, tops: Iterable[str]) -> bool:
    """Whether `path` is one of `tops` or inside one of them ("" is the whole library)."""
    return any(top in ("", path) or path.startswith(top + "/") for top in tops)


def normalize_scope(paths: Iterable[str]) -> list[str] | None:
    """Sorted distinct paths with none inside another; None when that means the whole library.

    The whole library is meant by the root itself ("" or "."), and by any path that is not a
    plain relative path of valid UTF-8 names (printable names of rejected files only match
    in a full scan).
    """
    clean: set[str] = set()
    for path in paths:
        parts = path.split("/")
        if path in ("", ".") or any(part in ("", ".", "..") for part in parts):
            return None
        if not _valid_name(path):
            return None
        clean.add(path)
    scope: list[str] = []
    kept: set[str] = set()
    for path in sorted(clean):  # a folder sorts before everything inside it
        parts = path.split("/")
        if not any("/".join(parts[:depth]) in kept for depth in range(1, len(parts))):
            kept.add(path)
            scope.append(path)
    return scope


def _readable_root(root: Path) -> os.stat_result:
    """The root's stat; LibraryError unless it is a folder that can be listed."""
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
    return root_stat


class _Walk:
    """One depth-first walk in name order, filling a ScanResult as it goes.

    A rescan of a big unchanged library is mostly this walk, so the per-entry path is kept
    short: one d_type check, one suffix test and one stat for an image file, nothing else.
    """

    def __init__(self, options: ScanOptions, excluded: set[Path]) -> None:
        self.options = options
        self.excluded = excluded
        self.visited: set[tuple[int, int]] = set()
        self.result = ScanResult()

    def folder(self, path: str, prefix: str, bad_folder: str | None) -> None:
        """Walk one folder; `bad_folder` is set once some folder above has a non-UTF-8 name."""
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=_name)
        except OSError as exc:
            self.problem(prefix or ".", f"folder cannot be read: {exc.strerror}", bad_folder)
            self.result.unknown.append(prefix.rstrip("/"))
            return
        skip_hidden = not self.options.include_hidden
        extensions = self.options.extensions
        for entry in entries:
            name = entry.name
            if skip_hidden and name.startswith("."):
                continue
            rel_path = prefix + name
            bad = bad_folder
            if not name.isascii() and not _valid_name(name):
                bad = _BAD_FILE_NAME
            try:
                if entry.is_symlink() and not self.options.follow_symlinks:
                    continue
                if entry.is_dir():
                    self.subfolder(entry, rel_path, bad and _BAD_FOLDER_NAME)
                    continue
                if not _is_image_name(name, extensions):
                    continue
                st = entry.stat()
            except OSError as exc:
                self.problem(rel_path, f"cannot be read: {exc.strerror}", bad)
                self.result.unknown.append(rel_path)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            info = FileInfo(path=rel_path, size=st.st_size, mtime_ns=st.st_mtime_ns)
            if bad is None:
                self.result.files[rel_path] = info
            else:
                self.reject(info, bad)

    def subfolder(self, entry: os.DirEntry[str], rel_path: str, bad_folder: str | None) -> None:
        self.enter(entry.path, entry.stat(), rel_path, bad_folder)

    def enter(self, path: str, st: os.stat_result, rel_path: str, bad: str | None) -> None:
        key = (st.st_dev, st.st_ino)
        if key in self.visited:
            return  # a symlink loop or a folder seen through another link
        if self.excluded and Path(path).resolve() in self.excluded:
            return
        self.visited.add(key)
        self.folder(path, rel_path + "/", bad)

    def path(self, root: Path, rel_path: str) -> None:
        """Scan one path below `root` the way the full walk would meet it, if it would."""
        names = rel_path.split("/")
        current = str(root)
        for depth, name in enumerate(names):
            if name.startswith(".") and not self.options.include_hidden:
                return
            current = os.path.join(current, name)
            last = depth == len(names) - 1
            try:
                st = os.lstat(current)
                if stat.S_ISLNK(st.st_mode):
                    if not self.options.follow_symlinks:
                        return
                    st = os.stat(current)
            except OSError as exc:
                if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                    self.problem(rel_path, f"cannot be read: {exc.strerror}", None)
                    self.result.unknown.append("/".join(names[: depth + 1]))
                return  # gone (or unknown): nothing found there
            if stat.S_ISDIR(st.st_mode):
                if last:
                    self.enter(current, st, rel_path, None)
                    return
                if self.excluded and Path(current).resolve() in self.excluded:
                    return
                self.visited.add((st.st_dev, st.st_ino))
            elif not last:
                return  # a file where a folder was: nothing below it
            elif stat.S_ISREG(st.st_mode) and _is_image_name(name, self.options.extensions):
                info = FileInfo(path=rel_path, size=st.st_size, mtime_ns=st.st_mtime_ns)
                self.result.files[rel_path] = info

    def finish(self) -> ScanResult:
        """The result, once every path has been walked."""
        result = self.result
        # A real file literally named like the printable version of a bad name keeps its place.
        for rel_path in result.rejected.keys() & result.files.keys():
            del result.rejected[rel_path]
        return result

    def reject(self, info: FileInfo, bad: str) -> None:
        shown = _printable(info.path)
        self.result.problems.append((shown, bad))
        self.result.rejected[shown] = RejectedFile(replace(info, path=shown), bad)

    def problem(self, rel_path: str, reason: str, bad: str | None) -> None:
        self.result.problems.append((rel_path if bad is None else _printable(rel_path), reason))


_BAD_FILE_NAME = "file name is not valid UTF-8"
_BAD_FOLDER_NAME = "folder name is not valid UTF-8"


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _is_image_name(name: str, extensions: frozenset[str]) -> bool:
    """Whether a file of this name is a candidate image: a known extension after a stem."""
    return name[name.rfind(".") :].lower() in extensions and _has_stem(name)


def _has_stem(name: str) -> bool:
    """Whether the name is more than dots and an extension: ".png" has none (os.path.splitext)."""
    return bool(name[: name.rfind(".")].strip("."))


def _valid_name(rel_path: str) -> bool:
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _printable(rel_path: str) -> str:
    return os.fsencode(rel_path).decode("utf-8", errors="backslashreplace")
