"""scrapyd: the project as an egg, a client of scrapyd's JSON API, and a local scrapyd.

scrapyd runs a project from an egg: a zip of its packages whose
`EGG-INFO/entry_points.txt` names the settings module. `build_egg` writes one
with `newscrawl` and `pipelines` (and their package data) and nothing else,
straight with `zipfile`: no `setup.py`, no build folders in the work tree, the
same result with any setuptools. Deploy it with scrapyd-client:

    python -m newscrawl.local.scrapyd_server egg dist/newscrawl.egg
    scrapyd-deploy --egg dist/newscrawl.egg             # target [deploy] of scrapy.cfg
    SCRAPYD_URL=http://host:6800/ scrapyd-deploy env --egg dist/newscrawl.egg

`ScrapydClient` schedules crawls (`schedule.json`) and follows them
(`listjobs.json`); `newscrawl schedule` uses it for `target = "scrapyd"` jobs.
`ScrapydServer` starts a scrapyd on 127.0.0.1 in a folder of its own (the
tests use it; `python -m newscrawl.local.scrapyd_server serve DIR` for a try by hand).

scrapyd starts each crawl in a process of its own with scrapyd's environment:
`newscrawl.settings` reads MONGO_URI, MONGO_DATABASE, NEWSCRAWL_HOST_MAP, … from
that environment when it is imported, so give them per crawl as
`setting=NAME=VALUE` (the client's `settings`) or in scrapyd's environment.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newscrawl import __version__
from newscrawl.local.server import PROJECT_ROOT, stop_process
from newscrawl.redaction import redact

EGG_PACKAGES = ("newscrawl", "pipelines")  # what a crawl imports; fixtures/ is for tests only
EGG_DATA_SUFFIXES = (".toml", ".json", ".typed")
SETTINGS_MODULE = "newscrawl.settings"
DEFAULT_PROJECT = "newscrawl"
REQUEST_TIMEOUT = 30.0


class ScrapydError(RuntimeError):
    """scrapyd could not be reached, or answered with an error."""


# --- the egg -----------------------------------------------------------------------------------

def egg_files(root: Path = PROJECT_ROOT) -> list[tuple[Path, str]]:
    """(file, name in the egg) for every module and data file of EGG_PACKAGES, sorted."""
    files: list[tuple[Path, str]] = []
    for package in EGG_PACKAGES:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise FileNotFoundError(f"{base}: not a package")
        for path in sorted(base.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py" or path.suffix in EGG_DATA_SUFFIXES:
                files.append((path, path.relative_to(root).as_posix()))
    return files


def egg_metadata(version: str) -> dict[str, str]:
    return {
        "EGG-INFO/PKG-INFO": f"Metadata-Version: 2.1\nName: newscrawl\nVersion: {version}\n",
        # scrapyd's runner reads the settings module from here.
        "EGG-INFO/entry_points.txt": f"[scrapy]\nsettings = {SETTINGS_MODULE}\n",
        "EGG-INFO/top_level.txt": "".join(f"{package}\n" for package in EGG_PACKAGES),
    }


def build_egg(out: Path, *, version: str = __version__, root: Path = PROJECT_ROOT) -> Path:
    """Write the project's egg to `out` (a file) and return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as egg:
        for path, name in egg_files(root):
            egg.write(path, name)
        for name, text in egg_metadata(version).items():
            egg.writestr(name, text)
    tmp.replace(out)
    return out


# --- the client ----------------------------------------------------------------------------------

def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without `user:password@`, and the Basic authorization header for them."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"scrapyd URL {redact(url)!r}: expected http://host:port/")
    if parts.username is None:
        return url, None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    bare = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return bare, "Basic " + base64.b64encode(token.encode()).decode()


def redact_url(url: str) -> str:
    return split_credentials(url)[0] if "@" in url else url


@dataclass
class ScrapydClient:
    """scrapyd's JSON API for one project."""

    url: str
    project: str = DEFAULT_PROJECT
    timeout: float = REQUEST_TIMEOUT
    _base: str = field(init=False, repr=False)
    _auth: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        base, self._auth = split_credentials(self.url)
        self._base = base if base.endswith("/") else base + "/"

    def call(self, endpoint: str, params: Sequence[tuple[str, str]] = (), *,
             post: bool = False) -> dict[str, Any]:
        query = urllib.parse.urlencode(list(params))
        url = urllib.parse.urljoin(self._base, endpoint)
        if post:
            request = urllib.request.Request(url, data=query.encode(), method="POST")
        else:
            request = urllib.request.Request(f"{url}?{query}" if query else url)
        if self._auth:
            request.add_header("Authorization", self._auth)
        where = f"scrapyd at {redact_url(self.url)}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise ScrapydError(f"{where}: {endpoint}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ScrapydError(f"{where}: {endpoint}: {redact(str(reason))}") from None
        try:
            answer = json.loads(body)
        except ValueError:
            raise ScrapydError(f"{where}: {endpoint}: not a JSON answer") from None
        if not isinstance(answer, dict) or answer.get("status") != "ok":
            message = answer.get("message") if isinstance(answer, dict) else answer
            # scrapyd's messages may quote the settings it was given: no password in ours.
            raise ScrapydError(f"{where}: {endpoint}: {redact(' '.join(str(message).split()))}")
        return answer

    def daemon_status(self) -> dict[str, Any]:
        return self.call("daemonstatus.json")

    def spiders(self) -> list[str]:
        return [str(name) for name in self.call("listspiders.json", [("project", self.project)])
                .get("spiders", [])]

    def schedule(self, spider: str, args: Mapping[str, str] | None = None,
                 settings: Mapping[str, str] | None = None) -> str:
        """Queue a crawl; returns scrapyd's job id."""
        params = [("project", self.project), ("spider", spider)]
        params += [("setting", f"{name}={value}") for name, value in (settings or {}).items()]
        params += [(name, str(value)) for name, value in (args or {}).items()]
        return str(self.call("schedule.json", params, post=True)["jobid"])

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        answer = self.call("listjobs.json", [("project", self.project)])
        return {state: list(answer.get(state) or []) for state in ("pending", "running", "finished")}

    def job(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        """(state, entry) of a job in listjobs.json; None when scrapyd does not list it."""
        for state, entries in self.jobs().items():
            for entry in entries:
                if entry.get("id") == job_id:
                    return state, entry
        return None

    def wait(self, job_id: str, *, timeout: float, poll: float = 0.5) -> dict[str, Any]:
        """Wait for a job to finish; its listjobs.json entry."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.job(job_id)
            if found and found[0] == "finished":
                return found[1]
            if time.monotonic() > deadline:
                state = found[0] if found else "not listed"
                raise ScrapydError(f"job {job_id} still {state} after {timeout:.0f}s")
            time.sleep(poll)


# --- a local scrapyd ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrapyd_config(port: int, *, poll_interval: float = 1.0) -> str:
    return (
        "[scrapyd]\n"
        "bind_address = 127.0.0.1\n"
        f"http_port = {port}\n"
        f"poll_interval = {poll_interval}\n"
        "eggs_dir = eggs\n"
        "logs_dir = logs\n"
        "dbs_dir = dbs\n"
        "items_dir =\n"
        "jobs_to_keep = 20\n"
        "finished_to_keep = 200\n"
    )


@dataclass
class ScrapydServer:
    """scrapyd on 127.0.0.1 with its config, eggs, logs and queues under `workdir`.

    `python` is the interpreter scrapyd runs with (and starts crawls with);
    `env` its environment (default: this process's).
    """

    workdir: Path
    python: str = sys.executable
    port: int = 0
    env: Mapping[str, str] | None = None
    poll_interval: float = 1.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        return self.workdir / "scrapyd.log"

    def start(self, *, timeout: float = 30.0) -> ScrapydServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        (self.workdir / "scrapyd.conf").write_text(
            scrapyd_config(self.port, poll_interval=self.poll_interval), encoding="utf-8")
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "scrapyd"], cwd=self.workdir, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env=dict(os.environ if self.env is None else self.env))
        client = ScrapydClient(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.daemon_status()
                return self
            except ScrapydError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_file.read_text(errors="replace")[-3000:]
                    raise ScrapydError(f"scrapyd did not start on {self.url}:\n{tail}") from None
                time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to scrapyd and the crawls it started (its process group), then SIGKILL."""
        if self.process is None:
            return
        stop_process(self.process, timeout)
        self.process = None

    def __enter__(self) -> ScrapydServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- python -m newscrawl.local.scrapyd_server ------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m newscrawl.local.scrapyd_server",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    egg = sub.add_parser("egg", help="write the project's egg (for scrapyd-deploy --egg)")
    egg.add_argument("out", type=Path, help="the egg file to write")
    egg.add_argument("--version", default=__version__)
    serve = sub.add_parser("serve", help="run a scrapyd on 127.0.0.1 until Ctrl-C")
    serve.add_argument("workdir", type=Path, help="its config, eggs, logs and queues")
    serve.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    if args.command == "egg":
        print(build_egg(args.out, version=args.version))
        return 0
    server = ScrapydServer(args.workdir, port=args.port).start()
    print(server.url, flush=True)
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
