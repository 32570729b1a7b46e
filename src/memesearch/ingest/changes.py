"""Pure change detection: what a scan means for the store, before and after content hashing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from memesearch.records import FailedFile, FileInfo, FileState, Reuse, StoredFile


@dataclass(slots=True)
class ScanDiff:
    """A scan compared with the store, by (size, mtime) alone."""

    unchanged: int = 0
    still_failing: int = 0  # unchanged files that failed before: not retried
    to_hash: list[FileInfo] = field(default_factory=list)  # new, or size/mtime changed
    stale: list[FileInfo] = field(default_factory=list)  # same file, no vector of this model
    missing: dict[int, StoredFile] = field(default_factory=dict)  # by id: gone from disk


def diff_scan(scanned: Mapping[str, FileInfo], stored: Mapping[str, StoredFile]) -> ScanDiff:
    """Classify every scanned and stored path; unchanged files cost nothing later."""
    diff = ScanDiff()
    for path, info in scanned.items():
        known = stored.get(path)
        if known is None or (known.size, known.mtime_ns) != (info.size, info.mtime_ns):
            diff.to_hash.append(info)
        elif known.state is FileState.OK and not known.has_vector:
            diff.stale.append(info)
        else:
            diff.unchanged += 1  # indexed, or failed and not changed since
            diff.still_failing += known.state is FileState.FAILED
    diff.missing = {known.id: known for path, known in stored.items() if path not in scanned}
    return diff


@dataclass(slots=True)
class Resolution:
    """What to do with each hashed file."""

    touched: list[tuple[int, FileInfo]] = field(default_factory=list)
    reuses: list[Reuse] = field(default_factory=list)
    to_embed: list[FileInfo] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    removals: list[int] = field(default_factory=list)


def resolve_hashes(
    diff: ScanDiff,
    stored: Mapping[str, StoredFile],
    hashes: Mapping[str, str],
    donors: Mapping[str, int],
    unreadable: Mapping[str, str],
) -> Resolution:
    """Decide per file: same content (touch), known content (move/copy vector), or embed."""
    resolution = Resolution()
    unclaimed = dict(diff.missing)
    for info in diff.to_hash:
        if info.path in unreadable:
            resolution.failed.append(FailedFile(info=info, reason=unreadable[info.path]))
            continue
        if info.path not in hashes:
            continue  # vanished while hashing: the next scan settles it
        content_hash, known = hashes[info.path], stored.get(info.path)
        if known is not None and known.content_hash == content_hash and known.has_vector:
            resolution.touched.append((known.id, info))
        elif content_hash in donors:
            donor_id = donors[content_hash]
            move = known is None and donor_id in unclaimed
            if move:
                del unclaimed[donor_id]
            resolution.reuses.append(Reuse(info, content_hash, donor_id, move=move))
        else:
            resolution.to_embed.append(info)
    # Copies made from a missing donor need it until they are written: they run first, same txn.
    resolution.removals = sorted(unclaimed)
    resolution.to_embed.extend(diff.stale)
    return resolution
