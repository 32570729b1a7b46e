"""Walking the library: nesting, odd names, hidden files, symlinks and unreadable folders."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from memesearch.config import IMAGE_EXTENSIONS
from memesearch.errors import LibraryError
from memesearch.ingest.scan import ScanOptions, normalize_scope, scan_library, scan_paths

OPTIONS = ScanOptions(extensions=frozenset(IMAGE_EXTENSIONS))


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_lists_images_recursively_with_relative_posix_paths(tmp_path: Path) -> None:
    for rel in (
        "a.jpg",
        "sub/b.PNG",
        "sub/deeper/c d.webp",
        "日本/猫.gif",
        "notes.txt",
        ".hidden/e.jpg",
        "sub/.f.jpg",
    ):
        touch(tmp_path / rel)
    result = scan_library(tmp_path, OPTIONS)
    assert sorted(result.files) == ["a.jpg", "sub/b.PNG", "sub/deeper/c d.webp", "日本/猫.gif"]
    info = result.files["a.jpg"]
    assert info.size == 1 and info.mtime_ns == (tmp_path / "a.jpg").stat().st_mtime_ns
    with_hidden = scan_library(tmp_path, ScanOptions(OPTIONS.extensions, include_hidden=True))
    assert ".hidden/e.jpg" in with_hidden.files and "sub/.f.jpg" in with_hidden.files


def test_symlinks_are_skipped_unless_followed_and_loops_end(tmp_path: Path) -> None:
    touch(tmp_path / "lib" / "real" / "a.jpg")
    touch(tmp_path / "outside" / "b.jpg")
    os.symlink(tmp_path / "lib", tmp_path / "lib" / "real" / "loop")
    os.symlink(tmp_path / "outside", tmp_path / "lib" / "linked")
    assert sorted(scan_library(tmp_path / "lib", OPTIONS).files) == ["real/a.jpg"]
    follow = ScanOptions(OPTIONS.extensions, follow_symlinks=True)
    assert sorted(scan_library(tmp_path / "lib", follow).files) == ["linked/b.jpg", "real/a.jpg"]


def test_excluded_folders_are_not_walked(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "memesearch-data" / "thumb.jpg")
    options = ScanOptions(OPTIONS.extensions, exclude=(tmp_path / "memesearch-data",))
    assert list(scan_library(tmp_path, options).files) == ["a.jpg"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_is_reported_not_fatal(tmp_path: Path) -> None:
    touch(tmp_path / "ok.jpg")
    touch(tmp_path / "locked" / "x.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        result = scan_library(tmp_path, OPTIONS)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert list(result.files) == ["ok.jpg"]
    assert result.problems[0][0] == "locked/"


def test_non_utf8_names_are_reported(tmp_path: Path) -> None:
    touch(tmp_path / "ok.jpg")
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as handle:
        handle.write(b"x")
    result = scan_library(tmp_path, OPTIONS)
    assert list(result.files) == ["ok.jpg"]
    assert result.problems == [("caf\\xe9.jpg", "file name is not valid UTF-8")]


def test_a_name_is_an_image_by_its_last_suffix_in_any_case(tmp_path: Path) -> None:
    for rel in ("a.JPEG", "b..png", "c.png.txt", "d.txt.gif", "e.", "png", "folder.png/f.webp"):
        touch(tmp_path / rel)
    touch(tmp_path / ".png")  # all extension and no name, as os.path.splitext sees it
    result = scan_library(tmp_path, ScanOptions(OPTIONS.extensions, include_hidden=True))
    assert list(result.files) == ["a.JPEG", "b..png", "d.txt.gif", "folder.png/f.webp"]


def test_everything_under_a_non_utf8_folder_is_reported_under_a_printable_path(
    tmp_path: Path,
) -> None:
    root = os.fsencode(tmp_path)
    for raw in (b"d\xe9j\xe0/vu.png", b"d\xe9j\xe0/sub/deep.png", b"d\xe9j\xe0/caf\xe9.png"):
        os.makedirs(os.path.dirname(os.path.join(root, raw)), exist_ok=True)
        with open(os.path.join(root, raw), "wb") as handle:
            handle.write(b"x")
    touch(tmp_path / "ok.jpg")
    result = scan_library(tmp_path, OPTIONS)
    assert list(result.files) == ["ok.jpg"]
    assert result.problems == [
        ("d\\xe9j\\xe0/caf\\xe9.png", "file name is not valid UTF-8"),
        ("d\\xe9j\\xe0/sub/deep.png", "folder name is not valid UTF-8"),
        ("d\\xe9j\\xe0/vu.png", "folder name is not valid UTF-8"),
    ]
    assert sorted(result.rejected) == [path for path, _ in result.problems]
    assert result.rejected["d\\xe9j\\xe0/vu.png"].info.size == 1


def test_missing_or_non_folder_root_raises(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="cannot be read"):
        scan_library(tmp_path / "nope", OPTIONS)
    touch(tmp_path / "file.jpg")
    with pytest.raises(LibraryError, match="not a folder"):
        scan_library(tmp_path / "file.jpg", OPTIONS)


def _within(path: str, scope: list[str]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in scope)


def test_a_scoped_scan_finds_exactly_what_a_full_scan_finds_there(tmp_path: Path) -> None:
    rng = random.Random(7)
    names = ["a", "b", "a b", "ab", ".h", "x.memes", "日本"]
    files = ["top.jpg", "notes.txt", "a.jpg"]
    for _ in range(120):
        depth = rng.randint(0, 3)
        folders = [rng.choice(names) for _ in range(depth)]
        leaf = rng.choice(["p.png", "q.JPG", "r.txt", ".s.jpg", "t.webp", "u"])
        files.append("/".join([*folders, leaf]))
    for rel in files:
        touch(tmp_path / rel)
    touch(tmp_path / "own" / "thumb.jpg")
    os.symlink(tmp_path / "a", tmp_path / "link")
    for options in (
        ScanOptions(OPTIONS.extensions, exclude=(tmp_path / "own",)),
        ScanOptions(OPTIONS.extensions, include_hidden=True, follow_symlinks=True),
    ):
        full = scan_library(tmp_path, options).files
        candidates = sorted({*files, *(f.rsplit("/", 1)[0] for f in files if "/" in f)})
        candidates += ["gone.jpg", "gone/deeper", "own", "own/thumb.jpg", "link", "link/p.png"]
        for _ in range(40):
            scope = normalize_scope(rng.sample(candidates, rng.randint(1, 6)))
            assert scope is not None
            scoped = scan_paths(tmp_path, options, scope)
            assert scoped.files == {p: i for p, i in full.items() if _within(p, scope)}, scope


def test_a_scoped_scan_of_what_is_gone_or_never_part_of_the_library_finds_nothing(
    tmp_path: Path,
) -> None:
    touch(tmp_path / "kept" / "a.jpg")
    touch(tmp_path / ".hidden" / "b.jpg")
    touch(tmp_path / "kept" / "notes.txt")
    touch(tmp_path / "file.jpg")
    os.symlink(tmp_path / "kept", tmp_path / "linked")
    scope = ["gone", "kept/gone.jpg", ".hidden", "kept/notes.txt", "file.jpg/below.jpg", "linked"]
    for path in scope:
        assert scan_paths(tmp_path, OPTIONS, [path]).files == {}, path
    assert scan_paths(tmp_path, OPTIONS, scope).files == {}
    assert list(scan_paths(tmp_path, OPTIONS, ["kept"]).files) == ["kept/a.jpg"]


def test_a_scoped_scan_still_refuses_an_unreadable_library(tmp_path: Path) -> None:
    with pytest.raises(LibraryError):
        scan_paths(tmp_path / "unmounted", OPTIONS, ["a.jpg"])


def test_scopes_are_deduplicated_and_nested_paths_folded_into_their_folder() -> None:
    assert normalize_scope(["b/x.jpg", "a", "a/y.jpg", "a b/z.jpg", "b/x.jpg", "ab"]) == [
        "a",
        "a b/z.jpg",
        "ab",
        "b/x.jpg",
    ]
    assert normalize_scope([]) == []


@pytest.mark.parametrize("path", ["", ".", "a/../b", "/abs.jpg", "a//b.jpg", "bad\udcff.jpg"])
def test_a_scope_that_is_the_root_or_not_a_plain_path_means_the_whole_library(
    path: str,
) -> None:
    assert normalize_scope(["fine.jpg", path]) is None
