"""Command line: `memesearch index | search | status | migrate`. Only this layer prints or exits."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from memesearch.config import Settings, load_settings
from memesearch.db.migrate import upgrade_schema
from memesearch.db.session import create_store_engine
from memesearch.errors import ConfigError, MemesearchError
from memesearch.index.persist import read_stamp
from memesearch.ingest.pipeline import IndexReport, Phase
from memesearch.ingest.pipeline import Progress as IndexProgress
from memesearch.search.query import ImageIdTerm, ImageTerm, Term, TextTerm
from memesearch.search.service import MAX_K, SearchPage
from memesearch.services import Services, open_services

app = typer.Typer(
    name="memesearch",
    no_args_is_help=True,
    add_completion=False,
    help="Semantic search over a folder of memes.",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # no hard wraps in paths
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $MEMESEARCH_CONFIG, else ./config.toml).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def index(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    allow_mass_removal: Annotated[
        bool,
        typer.Option(
            "--allow-mass-removal",
            help="Remove files that vanished all at once (kept by default: an unmounted drive?).",
        ),
    ] = False,
) -> None:
    """Bring the index up to date with the library folder (only changed files are processed)."""
    settings = _settings(config)
    report = _run(_index(settings, show_progress=not as_json, allow=allow_mass_removal))
    if as_json:
        out.print_json(json.dumps(_report_dict(report)))
    else:
        _print_report(report)


async def _index(settings: Settings, *, show_progress: bool, allow: bool) -> IndexReport:
    async with open_services(settings) as services:
        # A fresh saved index is kept current (and saved on exit), so `serve` starts fast.
        await services.keeper.open_if_saved()
        indexer = services.indexer()
        with _ProgressBar(enabled=show_progress and err.is_terminal) as bar:
            return await indexer.run(progress=bar.update, allow_mass_removal=allow)


@app.command()
def search(
    text: Annotated[list[str] | None, typer.Argument(help="Text to search for (weight 1).")] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", "-i", help="Example image: FILE[:WEIGHT].")
    ] = None,
    minus: Annotated[
        list[str] | None, typer.Option("--minus", "-m", help="Text to push away (weight -1).")
    ] = None,
    like: Annotated[
        list[str] | None, typer.Option("--like", help="Indexed image by id: ID[:WEIGHT].")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.", min=1, max=MAX_K)] = 20,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many results.", min=0)] = 0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search by text and/or example images, e.g. `memesearch search "cat" --minus cartoon`."""
    terms: list[Term] = [TextTerm(t) for t in text or []]
    terms += [TextTerm(t, -1.0) for t in minus or []]
    terms += [_image_term(spec) for spec in image or []]
    terms += [_like_term(spec) for spec in like or []]
    if not terms:
        raise typer.BadParameter("give some text, --image, --minus or --like")
    page = _run(_search(_settings(config), terms, k=k, offset=offset))
    if as_json:
        out.print_json(json.dumps(_page_dict(page)))
        return
    if not page.hits:
        err.print("no results (is the library indexed? run `memesearch index`)")
    for hit in page.hits:
        out.print(f"{hit.score:.4f}  {hit.path}", markup=False)


async def _search(settings: Settings, terms: list[Term], *, k: int, offset: int) -> SearchPage:
    async with open_services(settings) as services:
        service = await services.search_service()
        return await service.search(terms, k=k, offset=offset)


@app.command()
def status(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    failures: Annotated[bool, typer.Option("--failures", help="List failed files.")] = False,
) -> None:
    """Show what is indexed, with which model, and (optionally) which files failed."""
    settings = _settings(config)
    data = _run(_status(settings, with_failures=failures))
    if as_json:
        out.print_json(json.dumps(data))
        return
    for key in ("library", "database", "model", "dim", "files", "indexed", "failed", "index"):
        out.print(f"{key:>9}: {data[key]}", markup=False)
    for item in data.get("failures", []):
        out.print(f"  {item['path']}: {item['error']}", markup=False)


async def _status(settings: Settings, *, with_failures: bool) -> dict[str, Any]:
    async with open_services(settings) as services:
        counts = await asyncio.to_thread(services.repo.counts, space=services.space)
        data: dict[str, Any] = {
            "library": str(settings.library.path),
            "database": settings.database.url,
            "model": services.model.spec,
            "dim": services.model.dim,
            "files": counts.files,
            "indexed": counts.indexed,
            "failed": counts.failed,
            "index": await asyncio.to_thread(_saved_index, services),
        }
        if with_failures:
            rows = await asyncio.to_thread(services.repo.failures, limit=100_000)
            data["failures"] = [{"path": row.path, "error": row.error} for row in rows]
        return data


def _saved_index(services: Services) -> str:
    """The saved index file in one line: kind, size and whether it matches the store."""
    path = services.keeper.path
    stamp = read_stamp(path) if path is not None else None
    if path is None:
        return "not saved ([index] persist = false)"
    space = services.space
    if stamp is None or (stamp.model_id, stamp.dim) != (space.model_id, space.dim):
        return f"no saved index for this model at {path}"
    fresh = stamp.generation == services.repo.generation()
    state = "current" if fresh else "stale: rebuilt from the database on the next start"
    return f"{stamp.kind}, {stamp.count:,} vectors, {state} ({path})"


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind ([server] host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port ([server] port).", min=1)] = None,
) -> None:
    """Run the web UI and REST API; indexes in the background and stays up to date."""
    import uvicorn

    from memesearch.web.app import create_app

    settings = _settings(config)
    server = settings.server
    _guard(
        lambda: uvicorn.run(
            create_app(settings),
            host=host or server.host,
            port=port or server.port,
            log_level="info",
            proxy_headers=True,
            timeout_graceful_shutdown=10,
        )
    )


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Upgrade the database schema (every other command does this too)."""
    settings = _settings(config)
    engine = create_store_engine(settings.database.url)
    try:
        revision = _guard(lambda: upgrade_schema(engine))
    finally:
        engine.dispose()
    out.print(f"database schema at revision {revision}")


def _image_term(spec: str) -> Term:
    path, weight = _split_weight(spec, Path(spec).is_file())
    try:
        return ImageTerm(Path(path).read_bytes(), weight)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read image {path}: {exc.strerror}") from exc


def _like_term(spec: str) -> Term:
    raw_id, weight = _split_weight(spec, False)
    if not raw_id.isdigit():
        raise typer.BadParameter(f"--like takes ID[:WEIGHT], got {spec!r}")
    return ImageIdTerm(int(raw_id), weight)


def _split_weight(spec: str, whole_is_value: bool) -> tuple[str, float]:
    value, sep, weight = spec.rpartition(":")
    if whole_is_value or not sep:
        return spec, 1.0
    try:
        return value, float(weight)
    except ValueError as exc:
        raise typer.BadParameter(f"bad weight in {spec!r}: {weight!r} is not a number") from exc


def _settings(config: Path | None) -> Settings:
    return _guard(lambda: load_settings(config))


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return _guard(lambda: asyncio.run(coroutine))


def _guard(action: Callable[[], T]) -> T:
    """Turn domain errors into a one-line message and an exit code; nothing else is caught."""
    try:
        return action()
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(2) from exc
    except MemesearchError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(1) from exc


class _ProgressBar:
    """Rich progress per phase: files/s and ETA while hashing and embedding."""

    def __init__(self, *, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
        )
        self._tasks: dict[Phase, TaskID] = {}

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, event: IndexProgress) -> None:
        """Advance the bar of the event's phase."""
        if event.phase in (Phase.SCAN, Phase.DONE) or event.total == 0:
            return
        if event.phase not in self._tasks:
            self._tasks[event.phase] = self._progress.add_task(
                event.phase.value, total=event.total, rate=""
            )
        task_id = self._tasks[event.phase]
        self._progress.update(task_id, completed=event.done)
        speed = self._progress.tasks[task_id].speed
        self._progress.update(task_id, rate=f"{speed:.1f} files/s" if speed else "")


def _report_dict(report: IndexReport) -> dict[str, Any]:
    fields = (
        "scanned",
        "unchanged",
        "added",
        "updated",
        "renamed",
        "copied",
        "touched",
        "removed",
        "still_failing",
        "kept_unread",
        "held_removals",
        "decoded",
        "embedded",
    )
    data: dict[str, Any] = {name: getattr(report, name) for name in fields}
    data["failed"] = [{"path": path, "reason": reason} for path, reason in report.failed]
    data["held_reason"] = report.held_reason
    data["deferred"] = report.deferred
    data["scan_problems"] = [{"path": p, "reason": r} for p, r in report.scan_problems]
    data["seconds"] = round(report.seconds, 3)
    return data


def _print_report(report: IndexReport) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    for name in ("added", "updated", "renamed", "copied", "touched", "removed", "unchanged"):
        table.add_row(name, str(getattr(report, name)))
    failed = str(len(report.failed))
    if report.still_failing:
        failed += f" (and {report.still_failing} unchanged since they failed earlier)"
    table.add_row("failed", failed)
    table.add_row("time", f"{report.seconds:.1f} s")
    out.print(table)
    for path, reason in report.failed:
        out.print(f"  failed: {path}: {reason}", markup=False)
    for path, reason in report.scan_problems:
        out.print(f"  skipped: {path}: {reason}", markup=False)
    for path in report.deferred:
        out.print(f"  still being written? {path}: will be retried", markup=False)
    if report.held_reason:
        err.print(f"[yellow]warning:[/yellow] {report.held_reason}", markup=True)
    if report.kept_unread:
        out.print(
            f"  kept {report.kept_unread} indexed files in places that could not be read"
            " (see 'skipped' above); they are looked at again on the next run",
            markup=False,
        )
    if report.still_failing:
        out.print("  `memesearch status --failures` lists every failed file with its reason")


def _page_dict(page: SearchPage) -> dict[str, Any]:
    return {
        "results": [
            {
                "id": h.id,
                "path": h.path,
                "score": round(h.score, 6),
                "width": h.width,
                "height": h.height,
            }
            for h in page.hits
        ],
        "offset": page.offset,
        "next_offset": page.next_offset,
        "total_indexed": page.total_indexed,
    }


def main() -> None:
    """Console-script entry point."""
    app(prog_name="memesearch")


if __name__ == "__main__":
    main()
