"""The package's shape holds: imports follow the pipeline, and the docs list every setting."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from memesearch.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "memesearch"
# Lowest first: a module imports its own folder and what sits in lower layers, nothing else.
# (Folders of one layer are independent of each other: ingest never imports search.)
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "records", "files", "resources"}),
    frozenset({"config"}),
    frozenset({"images"}),
    frozenset({"db", "embed"}),
    frozenset({"index"}),
    frozenset({"ingest", "search"}),
    frozenset({"services"}),
    frozenset({"web"}),
    frozenset({"cli"}),
    frozenset({"__main__", "testing"}),  # testing: for tests and benchmarks, imports nothing
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every memesearch module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "memesearch"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imported(path) if m in modules} - {name} for name, path in modules.items()
    }


def top(module: str) -> str:
    """The top-level room a module lives in: "ingest" for memesearch.ingest.pipeline."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(room: str) -> int:
    for rank, rooms in enumerate(LAYERS):
        if room in rooms:
            return rank
    raise AssertionError(f"memesearch.{room} is in no layer of tests/test_layout.py")


def test_every_import_goes_down_the_pipeline() -> None:
    wrong = []
    for module, targets in graph().items():
        room = top(module)
        if room == "__init__":
            assert not targets, "the package's __init__ must stay import-free"
            continue
        for target in targets:
            other = top(target)
            if other != room and (other == "__init__" or layer(other) >= layer(room)):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + (module,)
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(edges[module]):
            if target in edges and target != module and not module.startswith(target + "."):
                visit(target, (*path, module))
        done.add(module)

    for module in sorted(edges):
        visit(module, ())


def setting_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    """Every leaf key of the settings, dotted: "server.auth.token"."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= setting_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_the_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE)
    assert len(rows) == len(set(rows)), "a key is listed twice"
    assert set(rows) == setting_keys()


def test_the_sample_config_file_holds_every_setting_and_its_defaults() -> None:
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    listed: set[str] = set()
    section = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[([a-z_.]+)\]", line):
            section = header.group(1) + "."
        # A key without a default to write down is shown commented out: "# cache_dir = ...".
        elif key := re.match(r"(?:# )?([a-z_]+) = ", line):
            listed.add(section + key.group(1))
    assert listed == setting_keys()
    shipped = Settings.model_validate(tomllib.loads(text))
    assert shipped == Settings()  # the values written there are the defaults
