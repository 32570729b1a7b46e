"""Walking the library: nesting, odd names, hidden files, symlinks and unreadable folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memesearch.config import IMAGE_EXTENSIONS
from memesearch.errors import LibraryError
from memesearch.scan import ScanOptions, scan_library

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
