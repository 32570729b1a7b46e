"""The real indexing pipeline on a real folder: changes, reuse, failures, model change."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from memesearch.config import Settings, load_settings
from memesearch.errors import LibraryError
from memesearch.records import FileState
from memesearch.search.query import ImageTerm
from memesearch.services import open_services
from memesearch.testing import write_config
from tests.corpus import make_corpus, write_image
from tests.support import index_ids, index_once, stored_rows


@pytest.fixture
def small_corpus(library: Path) -> list[str]:
    return make_corpus(library, n_good=24).good


def bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


async def test_unchanged_library_costs_no_decoding_no_model_load_and_no_write(
    settings: Settings, small_corpus: list[str]
) -> None:
    first = await index_once(settings)
    assert first.report.added == len(small_corpus)
    assert first.images_embedded == len(small_corpus)
    database = Path(str(make_url(settings.database.url).database))
    stored = database.read_bytes()

    second = await index_once(settings)
    assert database.read_bytes() == stored  # nothing written, not even a timestamp
    assert second.report.decoded == 0
    assert second.report.embedded == 0
    assert second.images_embedded is None  # weights were never loaded
    assert second.report.unchanged == first.report.scanned
    assert not second.report.changed


async def test_add_modify_rename_copy_touch_delete_apply_exactly(
    settings: Settings, library: Path, small_corpus: list[str]
) -> None:
    await index_once(settings)
    before, before_vectors = await stored_rows(settings)
    renamed_from, renamed_to = small_corpus[0], "renamed/" + Path(small_corpus[0]).name
    (library / "renamed").mkdir()
    os.rename(library / renamed_from, library / renamed_to)
    copy = "copy of it" + Path(small_corpus[1]).suffix
    shutil.copy(library / small_corpus[1], library / copy)
    write_image(library / small_corpus[2], seed=999_001)
    bump_mtime(library / small_corpus[2])
    bump_mtime(library / small_corpus[3])  # touched: same bytes, new mtime
    (library / small_corpus[4]).unlink()
    write_image(library / "brand new.png", seed=999_002)

    run = await index_once(settings)
    report = run.report
    assert (report.added, report.updated, report.renamed, report.copied) == (1, 1, 1, 1)
    assert (report.touched, report.removed, report.failed) == (1, 1, [])
    assert report.decoded == report.embedded == 2  # only the new and the modified file
    assert run.images_embedded == 2

    after, after_vectors = await stored_rows(settings)
    assert renamed_from not in after and small_corpus[4] not in after
    assert after[renamed_to].id == before[renamed_from].id  # a rename keeps id and vector
    old_vector = {v.file_id: v.vector for v in before_vectors}
    new_vector = {v.file_id: v.vector for v in after_vectors}
    assert new_vector[after[renamed_to].id] == old_vector[before[renamed_from].id]
    assert new_vector[after[copy].id] == old_vector[before[small_corpus[1]].id]
    assert new_vector[after[small_corpus[2]].id] != old_vector[before[small_corpus[2]].id]
    ok_files = [row for row in after.values() if row.state is FileState.OK]
    assert len(after_vectors) == len(ok_files) == len(small_corpus) + 1


async def test_a_pass_over_reported_paths_applies_them_exactly_and_touches_nothing_else(
    settings: Settings, library: Path, small_corpus: list[str]
) -> None:
    await index_once(settings)
    before, _ = await stored_rows(settings)
    folders = sorted({rel.split("/")[0] for rel in small_corpus if "/" in rel})
    moved_folder, deleted_folder = folders[0], folders[1]
    in_moved = [rel for rel in small_corpus if rel.startswith(moved_folder + "/")]
    in_deleted = [rel for rel in small_corpus if rel.startswith(deleted_folder + "/")]
    loose = [rel for rel in small_corpus if "/" not in rel or rel.startswith("photos/")]
    os.rename(library / moved_folder, library / "moved here")
    shutil.rmtree(library / deleted_folder)
    copy = "copy of it" + Path(loose[0]).suffix
    shutil.copy(library / loose[0], library / copy)
    write_image(library / loose[1], seed=999_001)
    bump_mtime(library / loose[1])
    (library / loose[2]).unlink()
    write_image(library / "brand new.png", seed=999_002)
    unreported = loose[3]
    (library / unreported).unlink()  # a change no watcher reported
    reported = [moved_folder, "moved here", deleted_folder, copy, loose[1], loose[2]]
    reported += ["brand new.png", "brand new.png", f"{deleted_folder}/gone twice.png"]

    report = (await index_once(settings, paths=reported)).report
    assert report.scope == 7  # duplicates and paths inside a reported folder fold away
    assert report.scanned == len(in_moved) + 3
    assert (report.added, report.updated, report.renamed, report.copied) == (1, 1, len(in_moved), 1)
    assert report.removed == len(in_deleted) + 1
    assert report.decoded == report.embedded == 2
    after, _ = await stored_rows(settings)
    for rel in in_moved:
        assert after["moved here" + rel[len(moved_folder) :]].id == before[rel].id
    assert not any(path.startswith((moved_folder + "/", deleted_folder + "/")) for path in after)
    assert unreported in after  # outside the scope: left for a full pass

    full = (await index_once(settings)).report
    assert (full.removed, full.added, full.updated, full.renamed) == (1, 0, 0, 0)
    assert unreported not in (await stored_rows(settings))[0]


async def test_a_pass_over_the_root_or_odd_paths_covers_the_whole_library(
    settings: Settings, library: Path, small_corpus: list[str]
) -> None:
    await index_once(settings)
    (library / small_corpus[0]).unlink()
    for paths in ([""], ["../elsewhere"]):
        report = (await index_once(settings, paths=paths)).report
        assert report.scope is None and report.scanned >= len(small_corpus) - 1
    assert small_corpus[0] not in (await stored_rows(settings))[0]


async def test_a_scoped_pass_on_a_missing_library_changes_nothing(
    settings: Settings, library: Path, small_corpus: list[str]
) -> None:
    await index_once(settings)
    before, _ = await stored_rows(settings)
    shutil.move(library, library.with_name("unmounted"))
    with pytest.raises(LibraryError):
        await index_once(settings, paths=[small_corpus[0]])
    assert set((await stored_rows(settings))[0]) == set(before)


async def test_broken_files_are_recorded_and_retried_only_when_changed(
    settings: Settings, library: Path
) -> None:
    write_image(library / "good.png", seed=1)
    (library / "broken.jpg").write_bytes(b"not a jpeg at all")
    first = await index_once(settings)
    assert first.report.failed == [("broken.jpg", "not a recognised image format")]
    files, _ = await stored_rows(settings)
    assert files["broken.jpg"].state is FileState.FAILED

    second = await index_once(settings)
    assert second.report.decoded == 0 and second.report.failed == []

    write_image(library / "broken.jpg", seed=2, fmt="JPEG")
    third = await index_once(settings)
    assert third.report.updated == 1 and third.report.failed == []
    files, vectors = await stored_rows(settings)
    assert files["broken.jpg"].state is FileState.OK and files["broken.jpg"].error is None
    assert len(vectors) == 2


async def test_a_file_that_breaks_loses_its_vector(settings: Settings, library: Path) -> None:
    write_image(library / "a.png", seed=1)
    write_image(library / "b.png", seed=2)
    await index_once(settings)
    (library / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = await index_once(settings)
    assert [path for path, _ in run.report.failed] == ["a.png"]
    files, vectors = await stored_rows(settings)
    assert [v.file_id for v in vectors] == [files["b.png"].id]


async def test_changing_the_model_re_embeds_everything_into_the_new_space(
    settings: Settings,
    config_file: Path,
    other_model_dir: Path,
    small_corpus: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await index_once(settings)
    monkeypatch.setenv("MEMESEARCH_MODEL__NAME", f"local-dir:{other_model_dir}")
    other = load_settings(config_file)
    run = await index_once(other)
    assert run.report.embedded == len(small_corpus)
    assert run.report.updated == len(small_corpus)
    assert run.report.unchanged == run.report.scanned - len(small_corpus)  # the broken files
    _, vectors = await stored_rows(other)
    assert len(vectors) == len(small_corpus)
    assert {(v.model_id.split("#")[0], v.dim) for v in vectors} == {
        (f"local-dir:{other_model_dir}", 24)
    }
    assert (await index_once(other)).report.embedded == 0


async def test_missing_library_changes_nothing(settings: Settings, library: Path) -> None:
    write_image(library / "a.png", seed=1)
    await index_once(settings)
    shutil.rmtree(library)
    with pytest.raises(LibraryError, match="cannot be read"):
        await index_once(settings)
    files, vectors = await stored_rows(settings)
    assert list(files) == ["a.png"] and len(vectors) == 1


async def test_symlink_loops_and_unreadable_folders_do_not_hang_or_abort(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    write_image(library / "inside" / "a.png", seed=1)
    os.symlink(library, library / "inside" / "loop")
    config = write_config(
        tmp_path / "follow.toml",
        {
            "library": {"path": str(library), "follow_symlinks": True},
            "database": {"url": f"sqlite:///{tmp_path / 'follow.db'}"},
            "model": {"name": str(tiny_model_dir)},
        },
    )
    run = await index_once(load_settings(config))
    assert run.report.added == 1


async def test_a_live_index_is_updated_in_place_without_a_rebuild(
    settings: Settings, library: Path
) -> None:
    for i in range(5):
        write_image(library / f"m{i}.png", seed=i)
    await index_once(settings)
    async with open_services(settings) as services:
        index = await services.index()
        search = await services.search_service()
        assert len(index) == 5
        (library / "m0.png").unlink()
        write_image(library / "fresh.png", seed=77)
        await services.indexer().run()
        assert await services.index() is index  # the same object, changed in place
        files, _ = await stored_rows(settings)
        assert sorted(int(i) for i in index_ids(index)) == sorted(
            row.id for row in files.values() if row.state is FileState.OK
        )
        page = await search.search([ImageTerm((library / "fresh.png").read_bytes())], k=10)
        assert page.hits[0].path == "fresh.png"
        assert "m0.png" not in {hit.path for hit in page.hits}


async def test_a_file_still_being_written_is_retried_not_failed(
    settings: Settings, library: Path, monkeypatch: pytest.MonkeyPatch, config_file: Path
) -> None:
    monkeypatch.setenv("MEMESEARCH_INDEXER__SETTLE_SECONDS", "60")
    patient = load_settings(config_file)
    whole = library / "whole.jpg"
    write_image(whole, seed=8, fmt="JPEG")
    data = whole.read_bytes()
    whole.unlink()
    (library / "copying.jpg").write_bytes(data[: len(data) // 2])  # a copy in progress
    first = await index_once(patient)
    assert first.report.failed == [] and first.report.deferred == ["copying.jpg"]
    files, _ = await stored_rows(patient)
    assert "copying.jpg" not in files

    (library / "copying.jpg").write_bytes(data)  # the copy finishes
    second = await index_once(patient)
    assert second.report.added == 1 and second.report.deferred == []


@pytest.mark.parametrize("scoped", [False, True], ids=["full pass", "watcher pass"])
async def test_an_unreadable_folder_is_unknown_not_deleted(
    settings: Settings, library: Path, monkeypatch: pytest.MonkeyPatch, scoped: bool
) -> None:
    """chmod 000 or an I/O error on a subfolder must not drop its memes (root ignores chmod:
    the error is raised where the scanner lists or looks at that folder)."""
    for name in ("sub/a.png", "sub/deeper/b.png", "top.png"):
        write_image(library / name, seed=len(name))
    await index_once(settings)
    broken = str(library / "sub")
    real_scandir, real_lstat = os.scandir, os.lstat

    def scandir(path: str) -> object:
        if str(path) == broken:
            raise OSError(errno.EIO, "Input/output error", path)
        return real_scandir(path)

    def lstat(path: str) -> os.stat_result:
        if str(path) == broken:
            raise OSError(errno.EIO, "Input/output error", path)
        return real_lstat(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "lstat", lstat)
    (library / "top.png").unlink()  # a real deletion in the same pass still counts
    run = await index_once(settings, paths=["sub", "top.png"] if scoped else None)
    assert run.report.removed == 1 and run.report.kept_unread == 2
    assert any(path.rstrip("/") == "sub" for path, _ in run.report.scan_problems)
    files, _ = await stored_rows(settings)
    assert sorted(files) == ["sub/a.png", "sub/deeper/b.png"]
    monkeypatch.undo()
    again = await index_once(settings)
    assert (again.report.removed, again.report.kept_unread, again.report.unchanged) == (0, 0, 2)


async def test_files_that_vanish_all_at_once_are_kept_until_confirmed(
    settings: Settings, library: Path
) -> None:
    """An unmounted drive leaves an empty mount point: nothing may be deleted for it."""
    for n in range(44):
        write_image(library / f"m{n:02d}.png", seed=100 + n)
    await index_once(settings)
    moved = library.parent / "unmounted"
    library.rename(moved)
    library.mkdir()  # the empty mount point stays
    held = await index_once(settings)
    assert (held.report.removed, held.report.held_removals) == (0, 44)
    assert held.report.held_reason and "library folder looks empty" in held.report.held_reason
    assert len((await stored_rows(settings))[0]) == 44

    library.rmdir()
    moved.rename(library)  # the drive is back: nothing to do, no model work
    back = await index_once(settings)
    assert (back.report.unchanged, back.report.held_removals, back.images_embedded) == (44, 0, None)

    for n in range(24):  # more than half of the library at once, folder not empty
        (library / f"m{n:02d}.png").unlink()
    share = await index_once(settings)
    assert (share.report.removed, share.report.held_removals) == (0, 24)
    assert "24 of 44 files" in (share.report.held_reason or "")

    async with open_services(settings) as services:
        confirmed = await services.indexer().run(allow_mass_removal=True)
    assert (confirmed.removed, confirmed.held_removals) == (24, 0)
    (library / "m30.png").unlink()  # a few at a time are removed as always
    assert (await index_once(settings)).report.removed == 1
