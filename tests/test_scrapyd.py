"""The project on a real scrapyd: the egg, `scrapyd-deploy` with scrapy.cfg's target, a
`finews` crawl of the mirror scheduled through schedule.json and followed with
listjobs.json, and `newscrawl schedule` with a `target = "scrapyd"` job.

scrapyd runs with a Python that has the project's dependencies but not the project
itself (a virtualenv pointing at this one's site-packages, whose .pth files, the
editable install among them, are not read): the crawls can only import newscrawl
and pipelines from the deployed egg. Its environment holds MONGO_URI, as the
scrapyd service's would (README: a URI with a password never goes as `setting=`),
but no MONGO_DATABASE or NEWSCRAWL_HOST_MAP: each crawl gets them as `setting=`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from newscrawl.local.scrapyd_server import (
    ScrapydClient,
    ScrapydError,
    ScrapydServer,
)
from tests.helpers import PROJECT_ROOT, wait_until

pytestmark = pytest.mark.integration

SCRAPYD_DEPLOY = Path(sys.executable).with_name("scrapyd-deploy")
PROJECT_ENV = ("MONGO_URI", "MONGO_DATABASE", "MONGO_COLLECTION", "NEWSCRAWL_HOST_MAP",
               "SCRAPY_SETTINGS_MODULE", "PYTHONPATH", "NEWSCRAWL_STATS_FILE")


@pytest.fixture(scope="module")
def scrapyd_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python with the project's dependencies but not the project.

    A fresh virtualenv whose one .pth line adds this venv's site-packages to
    sys.path: a path added that way has its own .pth files (the editable
    install of newscrawl among them) left unread.
    """
    import sysconfig
    import venv

    root = tmp_path_factory.mktemp("scrapyd-venv")
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(site_packages, "newscrawl-deps.pth").write_text(deps + "\n", encoding="utf-8")
    probe = subprocess.run([str(python), "-c", "import scrapy, scrapyd; import newscrawl"],
                           capture_output=True, text=True, cwd=root)
    assert "No module named 'newscrawl'" in probe.stderr, probe.stderr
    return str(python)


@pytest.fixture(scope="module")
def scrapyd(scrapyd_python: str, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = {name: value for name, value in os.environ.items() if name not in PROJECT_ENV}
    env["MONGO_URI"] = mongo_uri
    server = ScrapydServer(tmp_path_factory.mktemp("scrapyd"), python=scrapyd_python, env=env,
                           poll_interval=0.5)
    with server:
        yield server


@pytest.fixture(scope="module")
def deployed(scrapyd: ScrapydServer, tmp_path_factory: pytest.TempPathFactory) -> ScrapydClient:
    """The project's egg, deployed with scrapyd-deploy to scrapy.cfg's `env` target."""
    egg = tmp_path_factory.mktemp("egg") / "newscrawl.egg"
    subprocess.run([sys.executable, "-m", "newscrawl.local.scrapyd_server", "egg", str(egg)],
                   cwd=PROJECT_ROOT, check=True, capture_output=True)
    deploy = subprocess.run([str(SCRAPYD_DEPLOY), "env", "--egg", str(egg)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SCRAPYD_URL": scrapyd.url})
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert '"status": "ok"' in deploy.stdout + deploy.stderr
    return ScrapydClient(scrapyd.url)


def crawl_settings(database: str, host_map: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """What a crawl on scrapyd gets as `setting=`: scrapyd's environment has none of it."""
    return {"MONGO_DATABASE": database,
            "NEWSCRAWL_HOST_MAP": json.dumps(host_map), "AUTOTHROTTLE_ENABLED": "False",
            "MONGO_FLUSH_INTERVAL": "0.5", "NEWSCRAWL_SPOOL_DIR": str(tmp_path / "spool")}


def test_the_egg_holds_the_project_and_its_data_not_the_fixtures(tmp_path: Path) -> None:
    import zipfile

    from newscrawl.local.scrapyd_server import build_egg

    names = set(zipfile.ZipFile(build_egg(tmp_path / "n.egg")).namelist())
    assert {"newscrawl/settings.py", "pipelines/steps.py", "pipelines/data/sources.toml"} <= names
    assert not any(name.startswith(("fixtures/", "tests/")) for name in names)
    assert "EGG-INFO/entry_points.txt" in names


def job_log(scrapyd: ScrapydServer, spider: str, job_id: str) -> str:
    path = scrapyd.workdir / "logs" / "newscrawl" / spider / f"{job_id}.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def test_deployed_finews_crawls_the_mirror_into_the_database(
        deployed: ScrapydClient, scrapyd: ScrapydServer, mirror_server: Any, mirror: Any,
        mongo_uri: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> None:
    assert deployed.spiders() == ["feed", "finews", "share"]
    job_id = deployed.schedule("finews", settings=crawl_settings(
        mongo_db.name, mirror_server.host_map, tmp_path))
    entry = deployed.wait(job_id, timeout=90)
    assert entry["spider"] == "finews" and entry["end_time"]
    log = job_log(scrapyd, "finews", job_id)
    assert " ERROR: " not in log, log[-3000:]
    stored = {doc["_id"] for doc in mongo_db["articles"].find({}, {"_id": 1})}
    assert stored == {record["_id"] for record in mirror.truth("articles")}
    runs = list(mongo_db["crawl_runs"].find())
    assert [(r["spider"], r["status"]) for r in runs] == [("finews", "finished")]
    assert runs[0]["counts"]["stored"] == len(stored)
    assert runs[0]["health"]["status"] == "ok"  # the monitors ran on scrapyd too


def test_scrapyd_errors_are_one_line(deployed: ScrapydClient, scrapyd: ScrapydServer) -> None:
    with pytest.raises(ScrapydError, match=r"schedule\.json: .*nospider"):
        deployed.schedule("nospider")
    with pytest.raises(ScrapydError, match=re.escape("scrapyd at http://127.0.0.1:9/: daemonstatus.json")):
        ScrapydClient("http://127.0.0.1:9/", timeout=2).daemon_status()


def test_a_scheduled_job_with_target_scrapyd_runs_there(
        deployed: ScrapydClient, scrapyd: ScrapydServer, mirror_server: Any, mirror: Any,
        mongo_uri: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> None:
    config = tmp_path / "schedule.toml"
    config.write_text(
        f"[scheduler]\nlog_dir = '{tmp_path}'\nscrapyd_url = '{scrapyd.url}'\n"
        "[[job]]\nname = 'remote'\nspider = 'finews'\nargs = {categories = 'emnews'}\n"
        "interval = 2\ntarget = 'scrapyd'\n"
        f"settings = {{AUTOTHROTTLE_ENABLED = 'False', NEWSCRAWL_SPOOL_DIR = '{tmp_path}'}}\n",
        encoding="utf-8")
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "newscrawl.ops.cli", "schedule", "--config", str(config)],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name,
                 "NEWSCRAWL_HOST_MAP": json.dumps(mirror_server.host_map)})

    def ended() -> bool:
        text = log.read_text()
        if "remote: scrapyd job" in text and " ended" in text:
            return True
        assert scheduler.poll() is None, "the scheduler ended"
        return False

    try:
        try:
            wait_until(ended, 90, "the scrapyd job's end in the scheduler's log", interval=0.3)
        except AssertionError as failed:
            raise AssertionError(f"{failed}:\n{log.read_text()}") from None
    finally:
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(60) == 0
    output = log.read_text()
    assert f"remote: scheduled finews -a categories=emnews on scrapyd {scrapyd.url}" in output
    job_id = output.split("remote: scheduled", 1)[1].split("(job ", 1)[1].split(")", 1)[0]
    found = deployed.job(job_id)
    assert found is not None and found[0] == "finished"
    runs = list(mongo_db["crawl_runs"].find({"spider": "finews"}))
    # scrapyd adds its job id as the spider argument `_job`: the run record links the two.
    assert runs and runs[0]["arguments"] == {"categories": "emnews", "_job": job_id}
    assert runs[0]["status"] == "finished"
    assert runs[0]["counts"]["stored"] > 0
    # the scheduler named the job (NEWSCRAWL_JOB) and the monitors judged it there
    assert (runs[0]["job"], runs[0]["health"]["status"]) == ("remote", "ok")
    assert f"remote: scrapyd job {job_id} ended: finished, " in output  # read from its run record
    # The database URI went to no scrapyd queue, log or command line (issue 13, point 8).
    for path in scrapyd.workdir.rglob("*"):
        if path.is_file():
            assert b"MONGO_URI=" not in path.read_bytes(), path
