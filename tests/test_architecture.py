"""The layout README's "Layout" draws, held: one-way imports, a pure core, one copy of the
shared mechanisms. Read from the source (every import, lazy ones too), nothing imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

PURE_CORE = ("cleaning", "dates", "sources", "identity", "records")
# What a pure module may not import: the frameworks the steps and the storage wrap it with.
FRAMEWORKS = ("scrapy", "twisted", "pymongo", "bson", "newscrawl")
ROOMS = {"components", "distributed", "local", "ops", "parsers", "spiders"}
TOP_MODULES = {"__init__", "database", "items", "redaction", "settings"}


def python_files(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def top_level(module: str) -> str:
    return module.partition(".")[0]


def calls(path: Path, name: str) -> int:
    """Calls of a function or constructor called `name` (plain or as an attribute)."""
    return sum(1 for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Call)
               and (getattr(node.func, "id", None) == name or getattr(node.func, "attr", None) == name))


def relative(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


def test_pipelines_never_import_newscrawl() -> None:
    offenders = {relative(path): sorted(m for m in imported_modules(path) if top_level(m) == "newscrawl")
                 for path in python_files("pipelines")}
    assert {path: found for path, found in offenders.items() if found} == {}


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_imports_no_framework(module: str) -> None:
    imports = imported_modules(PROJECT_ROOT / "pipelines" / f"{module}.py")
    assert sorted(m for m in imports if top_level(m) in FRAMEWORKS) == []


def test_newscrawl_is_rooms_and_a_few_project_modules() -> None:
    package = PROJECT_ROOT / "newscrawl"
    rooms = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in package.glob("*.py")}
    assert rooms == ROOMS
    assert modules == TOP_MODULES


def test_every_package_says_what_lives_there() -> None:
    for init in [*python_files("newscrawl"), *python_files("pipelines")]:
        if init.name != "__init__.py":
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{relative(init)} has no docstring"


def test_one_place_makes_database_clients() -> None:
    makers = {relative(path): calls(path, "MongoClient")
              for path in [*python_files("newscrawl"), *python_files("pipelines")]}
    assert {path: n for path, n in makers.items() if n} == {"pipelines/storage.py": 1}


# A `scrapy crawl` command line being written: `"scrapy", "crawl"` or `"crawl", spider`.
CRAWL_COMMAND = re.compile(r'"scrapy",\s*"crawl"|"crawl",\s*(spider|"finews"|"share"|"feed")\b')


def test_one_place_builds_crawl_command_lines() -> None:
    builders = {relative(path) for path in [*python_files("newscrawl"), *python_files("bench"),
                                            *python_files("tests")]
                if CRAWL_COMMAND.search(path.read_text(encoding="utf-8"))
                and path.name != "test_architecture.py"}
    assert builders == {"newscrawl/ops/crawl.py"}


def test_one_place_kills_a_process_group() -> None:
    killers = {relative(path) for path in python_files("newscrawl") if calls(path, "killpg")}
    assert killers == {"newscrawl/local/server.py"}


@pytest.mark.integration
def test_the_wheel_installs_newscrawl_and_pipelines_with_their_data(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(PROJECT_ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("newscrawl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.partition("/")[0] for name in names if not name.partition("/")[0].endswith(".dist-info")}
    assert packages == {"newscrawl", "pipelines"}
    assert "pipelines/data/sources.toml" in names
    assert "newscrawl/ops/cli.py" in names and "newscrawl/local/ferretdb.py" in names


@pytest.mark.integration
def test_demo_without_the_checkout_says_it_needs_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    # From another folder the checkout's fixtures/ is not importable, as from an installed wheel.
    proc = subprocess.run([sys.executable, "-m", "newscrawl.ops.cli", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "NEWSCRAWL_LOCAL_DIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "runs from a checkout" in proc.stderr and "scripts/demo" in proc.stderr
    assert not (tmp_path / "ferretdb").exists()  # nothing was started first


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/helpers.py and tests/conftest.py, never in a test module."""
    importers = {relative(path): sorted(name for name in imported_modules(path)
                                        if name.startswith(("tests.test_", "test_")))
                 for path in python_files("tests")}
    assert {path: names for path, names in importers.items() if names} == {}
