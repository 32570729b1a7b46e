"""ingest.changes: what a scan means for the store, by size/mtime first and content hash after."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from memesearch.ingest.changes import Resolution, ScanDiff, diff_scan, resolve_hashes
from memesearch.records import FailedFile, FileInfo, FileState, Reuse, StoredFile


def seen(path: str, size: int = 100, mtime_ns: int = 1_000) -> FileInfo:
    """A file as the scanner saw it."""
    return FileInfo(path, size, mtime_ns)


def known(
    file_id: int,
    path: str,
    content_hash: str | None = "h-old",
    *,
    size: int = 100,
    mtime_ns: int = 1_000,
    state: FileState = FileState.OK,
    has_vector: bool = True,
) -> StoredFile:
    """A file as the store holds it; by default indexed with the same size and mtime as `seen`."""
    return StoredFile(file_id, path, size, mtime_ns, content_hash, state, has_vector)


def scan(*infos: FileInfo) -> dict[str, FileInfo]:
    """A scan result keyed by path."""
    return {info.path: info for info in infos}


def store(*files: StoredFile) -> dict[str, StoredFile]:
    """Stored files keyed by path."""
    return {file.path: file for file in files}


def resolve(
    scanned: Mapping[str, FileInfo],
    stored: Mapping[str, StoredFile],
    hashes: Mapping[str, str],
    donors: Mapping[str, int] | None = None,
    unreadable: Mapping[str, str] | None = None,
) -> Resolution:
    """diff_scan then resolve_hashes, as the pipeline runs them."""
    diff = diff_scan(scanned, stored)
    return resolve_hashes(diff, stored, hashes, donors or {}, unreadable or {})


# --- diff_scan ---------------------------------------------------------------------------------


def test_unchanged_files_cost_nothing() -> None:
    stored = store(known(1, "a.png"), known(2, "sub/b.jpg"))
    diff = diff_scan(scan(seen("a.png"), seen("sub/b.jpg")), stored)
    assert diff == ScanDiff(unchanged=2)


@pytest.mark.parametrize(
    "now", [seen("a.png", size=101), seen("a.png", mtime_ns=2_000)], ids=["size", "mtime"]
)
def test_a_size_or_mtime_change_goes_to_hashing(now: FileInfo) -> None:
    diff = diff_scan(scan(now), store(known(1, "a.png")))
    assert diff.to_hash == [now]
    assert (diff.unchanged, diff.stale, diff.missing) == (0, [], {})


def test_a_new_file_goes_to_hashing() -> None:
    diff = diff_scan(scan(seen("a.png"), seen("new.png")), store(known(1, "a.png")))
    assert diff.to_hash == [seen("new.png")]
    assert diff.unchanged == 1


def test_a_failed_file_that_did_not_change_is_not_retried() -> None:
    failed = known(1, "bad.png", state=FileState.FAILED, has_vector=False)
    diff = diff_scan(scan(seen("bad.png"), seen("ok.png")), store(failed, known(2, "ok.png")))
    assert (diff.unchanged, diff.still_failing) == (2, 1)
    assert (diff.to_hash, diff.stale) == ([], [])


def test_a_failed_file_that_changed_is_retried() -> None:
    failed = known(1, "bad.png", state=FileState.FAILED, has_vector=False)
    diff = diff_scan(scan(seen("bad.png", mtime_ns=5_000)), store(failed))
    assert diff.to_hash == [seen("bad.png", mtime_ns=5_000)]
    assert (diff.unchanged, diff.still_failing) == (0, 0)


def test_an_ok_file_without_a_vector_of_the_current_model_is_stale() -> None:
    diff = diff_scan(scan(seen("a.png")), store(known(1, "a.png", has_vector=False)))
    assert diff.stale == [seen("a.png")]
    assert (diff.unchanged, diff.to_hash) == (0, [])


def test_missing_files_are_listed_by_id() -> None:
    gone, kept = known(7, "gone.png"), known(3, "kept.png")
    gone_failed = known(8, "bad.png", None, state=FileState.FAILED, has_vector=False)
    diff = diff_scan(scan(seen("kept.png")), store(gone, kept, gone_failed))
    assert diff.missing == {7: gone, 8: gone_failed}
    assert diff.unchanged == 1


# --- resolve_hashes ----------------------------------------------------------------------------


def test_same_content_with_a_new_mtime_is_only_touched() -> None:
    touched = seen("a.png", mtime_ns=2_000)
    resolution = resolve(scan(touched), store(known(1, "a.png", "h1")), {"a.png": "h1"})
    assert resolution == Resolution(touched=[(1, touched)])


def test_same_content_without_a_vector_is_embedded_not_touched() -> None:
    now = seen("a.png", mtime_ns=2_000)
    stored = store(known(1, "a.png", "h1", has_vector=False))
    resolution = resolve(scan(now), stored, {"a.png": "h1"})
    assert (resolution.touched, resolution.to_embed) == ([], [now])


def test_new_content_at_a_known_path_is_embedded() -> None:
    now = seen("a.png", size=200)
    resolution = resolve(scan(now), store(known(1, "a.png", "h1")), {"a.png": "h2"})
    assert resolution == Resolution(to_embed=[now])


def test_a_rename_moves_the_vector_and_keeps_the_donor() -> None:
    renamed = seen("new name.png")
    resolution = resolve(
        scan(renamed), store(known(4, "old.png", "h1")), {"new name.png": "h1"}, {"h1": 4}
    )
    assert resolution.reuses == [Reuse(renamed, "h1", 4, move=True)]
    assert (resolution.removals, resolution.to_embed, resolution.touched) == ([], [], [])


def test_a_copy_of_a_present_file_copies_the_vector() -> None:
    copy = seen("copy.png")
    stored = store(known(4, "a.png", "h1"))
    resolution = resolve(scan(seen("a.png"), copy), stored, {"copy.png": "h1"}, {"h1": 4})
    assert resolution.reuses == [Reuse(copy, "h1", 4, move=False)]
    assert (resolution.removals, resolution.to_embed) == ([], [])


def test_two_new_copies_of_one_missing_donor_move_it_once() -> None:
    first, second = seen("x/one.png"), seen("y/two.png")
    hashes = {"x/one.png": "h1", "y/two.png": "h1"}
    resolution = resolve(scan(first, second), store(known(4, "old.png", "h1")), hashes, {"h1": 4})
    assert sorted(reuse.info.path for reuse in resolution.reuses) == ["x/one.png", "y/two.png"]
    assert all(reuse.donor_id == 4 for reuse in resolution.reuses)
    assert sorted(reuse.move for reuse in resolution.reuses) == [False, True]
    assert resolution.removals == []


def test_a_changed_file_taking_a_missing_files_content_copies_and_the_donor_goes() -> None:
    # a.png is still known at its path, so it is not a rename: it copies, and old.png is removed
    # in the same write, after the copy has read its vector.
    now = seen("a.png", size=300)
    stored = store(known(1, "a.png", "h-a"), known(2, "old.png", "h-old"))
    resolution = resolve(scan(now), stored, {"a.png": "h-old"}, {"h-old": 2})
    assert resolution.reuses == [Reuse(now, "h-old", 2, move=False)]
    assert resolution.removals == [2]


def test_unknown_content_is_embedded() -> None:
    new = seen("new.png")
    resolution = resolve(scan(new), {}, {"new.png": "h9"}, {"h1": 4})
    assert resolution == Resolution(to_embed=[new])


def test_unreadable_files_fail_with_their_reason() -> None:
    locked, fine = seen("locked.png"), seen("fine.png")
    resolution = resolve(
        scan(locked, fine),
        {},
        {"fine.png": "h1"},
        unreadable={"locked.png": "cannot read file: Permission denied"},
    )
    assert resolution.failed == [FailedFile(locked, "cannot read file: Permission denied")]
    assert resolution.to_embed == [fine]


def test_a_file_that_vanished_while_hashing_is_left_alone() -> None:
    changed = seen("a.png", mtime_ns=2_000)
    stored = store(known(1, "a.png"), known(2, "b.png"))
    resolution = resolve(scan(changed, seen("b.png")), stored, {})
    assert resolution == Resolution()


def test_removals_are_sorted_and_leave_out_moved_donors() -> None:
    stored = store(
        known(9, "nine.png", "h9"),
        known(2, "two.png", "h2"),
        known(7, "seven.png", "h7"),
        known(5, "five.png", "h5"),
    )
    resolution = resolve(scan(seen("renamed.png")), stored, {"renamed.png": "h7"}, {"h7": 7})
    assert resolution.reuses == [Reuse(seen("renamed.png"), "h7", 7, move=True)]
    assert resolution.removals == [2, 5, 9]


def test_stale_files_are_embedded_after_the_hashed_ones() -> None:
    stale, new = seen("stale.png"), seen("new.png")
    stored = store(known(1, "stale.png", has_vector=False))
    resolution = resolve(scan(stale, new), stored, {"new.png": "h1"})
    assert resolution.to_embed == [new, stale]
