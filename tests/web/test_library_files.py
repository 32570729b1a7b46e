"""library_files: traversal attempts against a real library folder, ETags and content types."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from memesearch.errors import MemesearchError
from memesearch.web.library_files import UnsafePathError, content_type_for, etag_for, library_file


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A library with a few images, a folder, hidden files, and a secret just outside it."""
    root = tmp_path / "library"
    (root / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(root / "cat.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(root / "a" / "b" / "dog.jpg")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes((root / "cat.png").read_bytes())
    (root / ".dot.png").write_bytes((root / "cat.png").read_bytes())
    (root / "%2e%2e").mkdir()
    (tmp_path / "secret.txt").write_text("outside the library")
    (tmp_path / "x").write_text("outside the library")
    return root


def test_a_file_inside_the_library(library: Path) -> None:
    assert library_file(library, "cat.png") == (library / "cat.png").resolve()
    found = library_file(library, "a/b/dog.jpg")
    assert found.is_absolute() and found == (library / "a" / "b" / "dog.jpg").resolve()


def test_a_library_root_given_through_a_symlink(library: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(library)
    assert library_file(alias, "cat.png") == (library / "cat.png").resolve()


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("", "empty path"),
        ("../x", "'..' segment"),
        ("../secret.txt", "'..' segment"),
        ("a/../../x", "'..' segment"),
        ("a/b/../../../secret.txt", "'..' segment"),
        ("a/../cat.png", "'..' segment"),
        ("./cat.png", "'.' or '..' segment"),
        ("a//b/dog.jpg", "empty"),
        ("cat.png/", "empty"),
        ("/etc/passwd", "is absolute"),
        ("//etc/passwd", "is absolute"),
        ("..\\x", "backslash"),
        ("a\\..\\..\\x", "backslash"),
        ("x\x00.jpg", "NUL byte"),
        ("cat.png\x00", "NUL byte"),
        ("C:/x", "drive letter"),
        ("c:x", "drive letter"),
        ("..%2fx", "hidden"),
        ("%2e%2e/x", "cannot be read"),
        ("%2e%2e%2fsecret.txt", "cannot be read"),
        ("missing.png", "cannot be read"),
        ("a/missing.png", "cannot be read"),
        ("cat.png/x", "cannot be read"),
        ("a", "not a regular file"),
        ("a/b", "not a regular file"),
        (".hidden/x.png", "hidden"),
        (".dot.png", "hidden"),
    ],
)
def test_unsafe_or_unservable_paths_are_refused(library: Path, relative: str, reason: str) -> None:
    with pytest.raises(UnsafePathError, match=reason):
        library_file(library, relative)


def test_unsafe_path_error_is_a_domain_error() -> None:
    assert issubclass(UnsafePathError, MemesearchError)


def test_hidden_files_when_allowed(library: Path) -> None:
    assert library_file(library, ".dot.png", allow_hidden=True).name == ".dot.png"
    assert library_file(library, ".hidden/x.png", allow_hidden=True).name == "x.png"
    with pytest.raises(UnsafePathError, match="'..' segment"):
        library_file(library, "../x", allow_hidden=True)


def test_symlink_inside_the_library_to_a_file_outside_is_refused(
    library: Path, tmp_path: Path
) -> None:
    (library / "leak.png").symlink_to(tmp_path / "secret.txt")
    (library / "a" / "up").symlink_to(tmp_path)
    assert (library / "leak.png").read_text() == "outside the library"
    for relative in ("leak.png", "a/up/secret.txt"):
        with pytest.raises(UnsafePathError, match="resolves outside the library"):
            library_file(library, relative)
    # Out and back in again ends at a library file, which is fine.
    assert library_file(library, "a/up/library/cat.png") == (library / "cat.png").resolve()


def test_a_followed_link_out_serves_only_the_file_that_was_indexed(
    library: Path, tmp_path: Path
) -> None:
    """With follow_symlinks, what the indexer reached through a link is served, nothing else."""
    (library / "a" / "up").symlink_to(tmp_path)
    secret = tmp_path / "secret.txt"
    indexed = (secret.stat().st_size, secret.stat().st_mtime_ns)
    found = library_file(library, "a/up/secret.txt", follow_symlinks=True, indexed_as=indexed)
    assert found == secret.resolve()
    with pytest.raises(UnsafePathError, match="resolves outside"):  # not indexed: no stat known
        library_file(library, "a/up/secret.txt", follow_symlinks=True)
    with pytest.raises(UnsafePathError, match="resolves outside"):  # links not followed
        library_file(library, "a/up/secret.txt", indexed_as=indexed)
    secret.write_text("changed since it was indexed, or a link turned elsewhere")
    with pytest.raises(UnsafePathError, match="not indexed"):
        library_file(library, "a/up/secret.txt", follow_symlinks=True, indexed_as=indexed)


def test_symlink_inside_the_library_to_a_file_inside_is_served(library: Path) -> None:
    (library / "alias.jpg").symlink_to(library / "a" / "b" / "dog.jpg")
    (library / "shortcut").symlink_to(Path("a") / "b")
    real = (library / "a" / "b" / "dog.jpg").resolve()
    assert library_file(library, "alias.jpg") == real
    assert library_file(library, "shortcut/dog.jpg") == real


def test_symlink_to_a_hidden_file_inside_is_refused(library: Path) -> None:
    (library / "peek.png").symlink_to(library / ".hidden" / "x.png")
    with pytest.raises(UnsafePathError, match="resolves to a hidden file"):
        library_file(library, "peek.png")
    assert library_file(library, "peek.png", allow_hidden=True).name == "x.png"


def test_dangling_symlink_is_refused(library: Path) -> None:
    (library / "gone.png").symlink_to(library / "nowhere.png")
    with pytest.raises(UnsafePathError, match="cannot be read"):
        library_file(library, "gone.png")


def test_etag_is_strong_and_changes_with_the_file(library: Path) -> None:
    path = library / "cat.png"
    first = etag_for(path)
    assert first.startswith('"') and first.endswith('"') and not first.startswith("W/")
    assert etag_for(path) == first
    Image.new("RGB", (4, 4), (0, 255, 0)).save(path)
    os.utime(path, ns=(1, 1))
    second = etag_for(path)
    assert second != first
    replacement = library / "new.png"
    replacement.write_bytes(path.read_bytes())
    os.utime(replacement, ns=(1, 1))
    os.replace(replacement, path)
    assert etag_for(path) != second  # same size and time, but a different file


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", "image/jpeg"),
        ("a.JPEG", "image/jpeg"),
        ("a.png", "image/png"),
        ("a.webp", "image/webp"),
        ("a.avif", "image/avif"),
        ("a.AVIF", "image/avif"),
        ("a.gif", "image/gif"),
        ("a.unknownext", "application/octet-stream"),
        ("noextension", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type_for(Path(name)) == expected


def test_content_types_without_a_system_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mimetypes.guess_type", lambda *args, **kwargs: (None, None))
    assert content_type_for(Path("a.webp")) == "image/webp"
    assert content_type_for(Path("a.AVIF")) == "image/avif"
