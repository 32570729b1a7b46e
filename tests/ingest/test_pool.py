"""The decode pool: holding decoded batches while the model loads; workers die with the parent."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memesearch.ingest.pool import hold_until


async def test_hold_until_takes_items_until_ready_and_leaves_the_rest_queued() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for item in (1, 2, 3):
        queue.put_nowait(item)
    holding = asyncio.ensure_future(hold_until(ready, queue, limit=10))
    await asyncio.sleep(0.01)
    assert not holding.done()  # the queue is empty and the model not ready: it waits
    ready.set_result(None)
    assert list(await holding) == [1, 2, 3]
    queue.put_nowait(4)
    assert queue.get_nowait() == 4  # the cancelled get took nothing


async def test_hold_until_stops_at_the_limit_and_at_the_end() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for item in (1, 2, 3, None, 5):
        queue.put_nowait(item)
    assert list(await hold_until(ready, queue, limit=2)) == [1, 2]
    assert list(await hold_until(ready, queue, limit=10)) == [3, None]
    assert queue.get_nowait() == 5


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_a_killed_indexer(tmp_path: Path, how: signal.Signals) -> None:
    """A killed indexing process (crash, cron timeout, `docker stop`) leaves no decode workers."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from pathlib import Path
            from memesearch.images.decode import DecodeLimits, PreprocessSpec
            from memesearch.ingest.pool import DecodePool

            async def main() -> None:
                async with DecodePool(2) as pool:
                    spec, limits = PreprocessSpec((8, 8)), DecodeLimits()
                    jobs = [pool.prepare(Path("missing"), spec, limits, None) for _ in range(4)]
                    await asyncio.gather(*jobs)
                    print(*pool._executor._processes, flush=True)
                    await asyncio.sleep(600)

            if __name__ == "__main__":  # spawned workers import this file too
                asyncio.run(main())
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        parent.send_signal(how)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a speed claim
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "decode workers outlived their parent"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
