"""The `newscrawl` command's manners: help that explains, and errors as one line.

Each case runs the real command in its own process, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from newscrawl.ops import cli
from tests.helpers import PROJECT_ROOT, newscrawl

pytestmark = pytest.mark.integration  # every test runs the command in a process of its own

UNREACHABLE = "mongodb://127.0.0.1:9/"


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("newscrawl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


# --- help --------------------------------------------------------------------------------------

def test_help_lists_every_command() -> None:
    proc = newscrawl("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("db", "demo", "replay", "runs", "query"):
        assert f"newscrawl {command}" in proc.stdout
    assert "MONGO_URI" in proc.stdout
    # Every command each module adds, with its one-line help (a command's own start loads
    # only its module, --help loads them all).
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    commands = {action.dest: action.help for action in subparsers._choices_actions}
    assert {"db", "redis", "health", "metrics", "web", "schedule", "backfill", "prove-times"} < set(commands)
    flat = " ".join(proc.stdout.split())
    for command, text in commands.items():
        assert command in flat and " ".join(str(text).split()) in flat, command


def test_a_command_starts_without_what_it_does_not_use(mongo_uri: str) -> None:
    # `newscrawl query` (no --text, no --source) reads the database: it imports neither the
    # other commands, nor Scrapy and the store, nor the segmenter and pinyin (bench/cli_start.py).
    unused = ["scrapy", "twisted", "numpy", "rensa", "rjieba", "pypinyin", "pipelines.storage",
              "newscrawl.ops.web", "newscrawl.ops.demo", "newscrawl.ops.schedule"]
    code = ("import json, sys; from newscrawl.ops import cli; code = cli.main(sys.argv[2:]); "
            "print(json.dumps([code, [m for m in json.loads(sys.argv[1]) if m in sys.modules]]))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(unused), "query", "--limit", "1",
                           "--format", "jsonl"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MONGO_URI": mongo_uri,
                                            "MONGO_DATABASE": f"test_{os.getpid()}_cli_start"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [0, []]


@pytest.mark.parametrize(("command", "explains"), [
    (["db"], ["start", "stop", "status", "MONGO_URI"]),
    (["demo"], ["--articles", "mirror"]),
    (["replay"], ["--spool-dir", "spool"]),
    (["runs"], ["--last", "--spider", "--format", "crawl_runs", "duration", "skipped"]),
    (["query"], ["--source", "--category", "--since", "--until", "--text", "--limit", "--format",
                 "Asia/Shanghai", "jingzhouribao", "csv", "jsonl"]),
])
def test_each_command_explains_itself(command: list[str], explains: list[str]) -> None:
    proc = newscrawl(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: newscrawl {command[0]}")
    for text in explains:
        assert text in proc.stdout


# --- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["query", "--since", "2021-13-45"], ["--since", "2021-13-45", "YYYY-MM-DD"]),
    (["query", "--until", "tomorrow"], ["--until", "tomorrow"]),
    (["query", "--since", "2022-01-02", "--until", "2022-01-01"], ["empty range"]),
    (["query", "--since", "2022-01-02", "--until", "2022-01-01T23:00"], ["empty range"]),
    (["query", "--limit", "-3"], ["--limit", "0 or more", "-3"]),
    (["query", "--format", "xml"], ["--format", "xml"]),
    (["query", "--text", "  "], ["--text"]),
    (["query", "--colour"], ["--colour"]),
    (["runs", "--last", "x"], ["--last", "'x'", "newscrawl runs --help"]),
    (["runs", "--format", "csv"], ["--format"]),
    (["runs", "extra"], ["extra"]),
    (["frobnicate"], ["frobnicate"]),
    ([], ["command"]),
    (["db", "restart"], ["restart"]),
])
def test_a_bad_argument_is_one_error_line(args: list[str], expected: list[str]) -> None:
    proc = newscrawl(*args, env={"MONGO_URI": UNREACHABLE})
    assert_one_error_line(proc, *expected)
    assert proc.returncode == 2


# --- bad configuration -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["runs"], ["query"], ["query", "--source", "荆州日报"]])
def test_an_unreachable_database_is_one_error_line(args: list[str]) -> None:
    proc = newscrawl(*args, env={"MONGO_URI": UNREACHABLE})
    line = assert_one_error_line(proc, "cannot reach the database", "127.0.0.1:9")
    assert "Topology" not in line
    assert proc.returncode == 1


def test_a_password_in_the_uri_is_not_printed() -> None:
    proc = newscrawl("runs", env={"MONGO_URI": "mongodb://reader:s3cret@127.0.0.1:9/"})
    line = assert_one_error_line(proc, "cannot reach the database", "reader:***@")
    assert "s3cret" not in line


@pytest.mark.parametrize("uri", ["http://example.com/", "mongodb://"])
def test_a_malformed_uri_is_one_error_line(uri: str) -> None:
    proc = newscrawl("query", env={"MONGO_URI": uri})
    assert_one_error_line(proc, "MONGO_URI")
    assert proc.returncode == 2


def test_a_broken_source_registry_is_one_error_line(tmp_path: Path) -> None:
    broken = tmp_path / "sources.toml"
    broken.write_text("[[medium]\nname = ", encoding="utf-8")
    proc = newscrawl("query", "--source", "荆州日报",
                     env={"NEWSCRAWL_SOURCES_FILE": str(broken), "MONGO_URI": UNREACHABLE})
    assert_one_error_line(proc, "NEWSCRAWL_SOURCES_FILE")
    missing = newscrawl("query", "--source", "荆州日报",
                        env={"NEWSCRAWL_SOURCES_FILE": str(tmp_path / "nope.toml"),
                             "MONGO_URI": UNREACHABLE})
    assert_one_error_line(missing, "NEWSCRAWL_SOURCES_FILE", "nope.toml")


@pytest.mark.integration
def test_commands_work_against_the_real_server(mongo_uri: str) -> None:
    """An empty database: nothing to print, exit 0 (the runs table says why on stderr)."""
    env = {"MONGO_URI": mongo_uri, "MONGO_DATABASE": f"test_{os.getpid()}_cli_empty"}
    runs = newscrawl("runs", env=env)
    assert (runs.returncode, runs.stdout) == (0, ""), runs.stderr
    assert runs.stderr.startswith("no runs recorded")
    query = newscrawl("query", "--format", "jsonl", env=env)
    assert (query.returncode, query.stdout, query.stderr) == (0, "", "")
    status = newscrawl("db", "status", env=env)
    assert status.returncode in (0, 3) and "Traceback" not in status.stderr


def test_a_read_command_exits_at_once_with_all_its_output_and_its_code(
        mongo_uri: str, mongo_db: Database[dict[str, Any]]) -> None:
    """`query`, `runs` and `health` end with os._exit once their output is out (cli.run):
    the output, block-buffered into a pipe, must still come whole, and a reader that goes
    away (`| head -1`) must still give 141 and no traceback."""
    start = datetime(2021, 12, 1, tzinfo=UTC)
    mongo_db["articles"].insert_many(
        {"_id": f"{n:06d}", "published_at": start + timedelta(minutes=n), "title": "标题" * 20,
         "source": "荆州日报", "source_slug": "jingzhouribao", "urls": [f"https://x/{n}"]}
        for n in range(3000))
    env = {"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name}
    whole = newscrawl("query", "--limit", "0", "--format", "jsonl", env=env)
    assert whole.returncode == 0, whole.stderr
    lines = whole.stdout.splitlines()
    assert len(lines) == 3000 and json.loads(lines[-1])["_id"] == "000000"
    script = Path(sys.executable).with_name("newscrawl")
    command = f"{script} query --limit 0 --format jsonl | head -1; exit ${{PIPESTATUS[0]}}"
    cut = subprocess.run(["bash", "-c", command], cwd=PROJECT_ROOT, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60)
    assert cut.returncode == 141 and len(cut.stdout.splitlines()) == 1
    assert "Traceback" not in cut.stderr


def test_redis_start_status_stop_drive_a_real_server(tmp_path: Path) -> None:
    def redis_command(*args: str) -> subprocess.CompletedProcess[str]:
        return newscrawl("redis", *args, env={"NEWSCRAWL_LOCAL_DIR": str(tmp_path)},
                         unset=["NEWSCRAWL_REDIS_URL"], timeout=60)

    started = redis_command("start")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("redis://127.0.0.1:")
    try:
        import redis

        assert redis.Redis.from_url(url).ping()
        assert redis_command("status").stdout.strip() == f"running {url}"
    finally:
        assert redis_command("stop").stdout.strip() == "stopped"
    status = redis_command("status")
    assert (status.returncode, status.stdout.strip()) == (3, "not running")
