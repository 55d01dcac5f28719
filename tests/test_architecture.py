"""The layout README's "Layout" draws, held: one-way imports, a pure core, one copy of the
shared mechanisms. Read from the source (every import, lazy ones too), nothing imported."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

PURE_CORE = ("cleaning", "dates", "sources", "identity", "records", "counter")
# What a pure module may not import: the frameworks the steps and the storage wrap it with.
FRAMEWORKS = ("scrapy", "twisted", "pymongo", "bson", "newscrawl")
ROOMS = {"components", "distributed", "local", "monitoring", "ops", "parsers", "spiders", "web"}
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
    # pipelines/config.py: the store and the commands that only read (their start imports no store)
    assert {path: n for path, n in makers.items() if n} == {"pipelines/config.py": 1}


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built by pip as a user's install would."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(PROJECT_ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("newscrawl-*.whl")
    return built


@pytest.mark.integration
def test_the_wheel_installs_newscrawl_and_pipelines_with_their_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.partition("/")[0] for name in names if not name.partition("/")[0].endswith(".dist-info")}
    assert packages == {"newscrawl", "pipelines"}
    assert "pipelines/data/sources.toml" in names
    assert "newscrawl/ops/cli.py" in names and "newscrawl/local/ferretdb.py" in names
    # The web console's templates and style sheet are package data.
    assert "newscrawl/web/templates/base.html" in names and "newscrawl/web/static/style.css" in names


@pytest.mark.integration
def test_demo_from_an_installed_wheel_says_it_needs_a_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # The installed copy comes first on the path; the venv gives the dependencies.
    proc = subprocess.run([sys.executable, "-c", "import sys, newscrawl.ops.cli as cli; "
                           "assert cli.__file__.startswith(sys.argv[1]), cli.__file__; "
                           "sys.exit(cli.main(['demo']))", str(site)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site),
                               "NEWSCRAWL_LOCAL_DIR": str(tmp_path / "local")})
    assert proc.returncode == 2, proc.stderr
    assert "runs from a checkout" in proc.stderr and "scripts/demo" in proc.stderr
    assert not (tmp_path / "local").exists()  # nothing was started first


def test_demo_from_the_checkout_finds_the_mirror_however_it_is_started() -> None:
    # The console script of an editable install has neither the checkout nor its
    # fixtures/ on sys.path: the demo puts the checkout there.
    code = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', sys.argv[1])]; "
            "from newscrawl.ops.demo import checkout_on_path; checkout_on_path(); "
            "import fixtures.generate; print(fixtures.generate.__file__)")
    proc = subprocess.run([sys.executable, "-c", code, str(PROJECT_ROOT)], cwd="/", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(PROJECT_ROOT / "fixtures" / "generate.py")
