"""The tree's rules, checked on the import graph of every module: one import name, only the
broker talks to Redis, the API and the workers never import each other, each sub-package imports
only what its docstring allows, and no two modules import each other (even for type checking)."""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import inferq

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "inferq"
LAYERS = ("api", "broker", "config", "workers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    """Every module of the package, by dotted name, as Python imports it (through the links
    inferq/api -> ../api and the like)."""
    found: dict[str, Path] = {}
    stack = [PACKAGE]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and (entry / "__init__.py").exists():
                stack.append(entry)
            elif entry.suffix == ".py":
                found[_module_name(entry)] = entry
    return found


SOURCES = _sources()


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module `path` names in an import statement, anywhere in it (functions and
    `if TYPE_CHECKING:` blocks included), resolved to the module or package it names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in SOURCES else base


GRAPH = {name: set(_imports(path, name)) for name, path in SOURCES.items()}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(source: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{mod} imports {target}"
        for mod, targets in GRAPH.items()
        if _under(mod, source)
        for target in targets
        if any(_under(target, f) for f in forbidden)
    )


def test_the_package_is_found_through_its_links() -> None:
    """Every module file in the repository's layer folders is a module of the package."""
    for layer in LAYERS:
        assert (PACKAGE / layer).resolve() == ROOT / layer, f"inferq/{layer} is not ../{layer}"
    files = {p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}
    files |= {p for p in PACKAGE.rglob("*.py") if p.parent == PACKAGE or "cli" in p.parts}
    reached = {p.resolve() for p in SOURCES.values()}
    assert files - reached == set()
    assert len(reached) == len(files)


def test_every_import_of_inferq_code_uses_the_one_import_name() -> None:
    files = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "build" not in p.parts]
    bad = []
    for path in files:
        for target in _imports(path, _module_name(path)):
            if target.split(".")[0] in LAYERS:
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert bad == []


def test_only_the_broker_imports_redis() -> None:
    outside = {mod for mod, targets in GRAPH.items() for t in targets if _under(t, "redis")}
    assert {mod for mod in outside if not _under(mod, "inferq.broker")} == set()


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("inferq.api", ("inferq.workers", "inferq.cli", "inferq.client")),
        ("inferq.workers", ("inferq.api", "inferq.cli", "inferq.client")),
        ("inferq.broker", ("inferq.api", "inferq.workers", "inferq.cli", "inferq.client")),
        ("inferq.config", ("inferq.api", "inferq.workers", "inferq.cli", "inferq.broker")),
        ("inferq.client", ("inferq.api", "inferq.workers", "inferq.cli")),
        ("inferq.broker.jobs", ("inferq.broker.batch", "inferq.broker.ops")),
        ("inferq.broker.batch", ("inferq.broker.ops",)),
        ("inferq.broker.ops", ("inferq.broker.batch",)),
        (
            "inferq.broker.tenants",
            ("inferq.broker.jobs", "inferq.broker.batch", "inferq.broker.ops"),
        ),
    ],
)
def test_layers_import_only_what_they_may(source: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(source, forbidden) == []


@pytest.mark.parametrize(
    ("process", "absent"),
    [
        (
            "inferq.workers.main",
            ("fastapi", "starlette", "uvicorn", "prometheus_client", "inferq.api", "inferq.client",
             "inferq.broker.batch"),
        ),
        ("inferq.api.main", ("aiohttp", "httpx", "inferq.workers", "inferq.client")),
    ],
)  # fmt: skip
def test_each_process_leaves_out_what_it_does_not_serve(
    process: str, absent: tuple[str, ...]
) -> None:
    """What `inferq worker` or `inferq api` imports at start stays in its memory as long as it
    runs (issue 15: idle memory): neither loads the other's stack or the batch client."""
    code = f"import sys, inferq.cli.main, {process}; print(' '.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = run.stdout.split()
    assert sorted(m for m in loaded if any(_under(m, a) for a in absent)) == []


def test_the_public_names_resolve_on_first_use() -> None:
    """`inferq`'s names are imported when first used (above); each still resolves, to where it
    is defined, and `from inferq import *` gives them all."""
    code = "from inferq import *; print(connect.__module__, JobKind.CHAT.value, len(dir()))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split()[:2] == ["inferq.client", "chat"]
    assert int(run.stdout.split()[2]) >= len(inferq.__all__)
    homes = {getattr(inferq, name).__module__.split(".")[1] for name in inferq.__all__}
    assert homes == {"broker", "client", "config"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        inferq.Nope  # noqa: B018


def test_the_brokers_foundation_imports_no_sub_package() -> None:
    root = [m for m in GRAPH if m.count(".") == 2 and _under(m, "inferq.broker")]
    subs = ("inferq.broker.jobs", "inferq.broker.batch", "inferq.broker.ops",
            "inferq.broker.tenants")  # fmt: skip
    assert root, "no root modules found"
    assert sorted(f"{m} imports {t}" for m in root for t in GRAPH[m] if t.startswith(subs)) == []


def test_no_two_modules_import_each_other() -> None:
    """Tarjan's strongly connected components over the module graph: every one is a single
    module (imports of a package's own __init__ by its children are not edges)."""
    edges = {m: {t for t in ts if t in GRAPH and t != m} for m, ts in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == []


def test_every_module_and_package_says_what_it_is() -> None:
    missing = [m for m, p in SOURCES.items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []
