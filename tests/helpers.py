"""Plain helpers shared by the test modules (no fixtures: those are in conftest.py).

Test modules import from here (`from tests.helpers import ...`) or from conftest.py (the
objects its fixtures hand out), never from one another.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from parsel import Selector
from pymongo import monitoring
from pymongo.database import Database

from fixtures import jekyll
from fixtures.check import Comparison, as_truth, compare
from newscrawl.parsers import PostPage
from pipelines.capabilities import Capabilities
from pipelines.identity import content_hash

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CORPUS_POSTS = PROJECT_ROOT / "fixtures" / "corpus"

T = TypeVar("T")


# --- the ways of storing ---------------------------------------------------------------------

# Each way of storing (pipelines.capabilities) the storage and near-duplicate tests run with:
# how a replace is guarded, and where near-duplicate candidates come from.
CAPABILITY_SETS = ("read-then-write/memory", "read-then-write/index", "atomic/index")


def capabilities_named(name: str, db: Database[dict[str, Any]]) -> Capabilities | None:
    """The server's capabilities with the guard and candidates `name` says; None when the
    server cannot honour them (FerretDB's replace is not atomic)."""
    import dataclasses

    detected = Capabilities.of_build_info(db.client.admin.command("buildInfo"))
    guard, candidates = name.split("/")
    if guard == "atomic" and not detected.atomic_replace:
        return None
    return dataclasses.replace(detected, atomic_replace=guard == "atomic",
                               band_candidates="index" if candidates == "index" else "memory")


class AfterTheRead(monitoring.CommandListener):
    """Runs `action` once, right after the next `_id` find the client's server answers, once
    armed: another writer's write between a store's read and its write, through pymongo's
    command monitoring (a client's `event_listeners`)."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action = action
        self.armed = False
        self.reads: set[int] = set()
        self.runs = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.armed and event.command_name == "find" and "_id" in (event.command.get("filter") or {}):
            self.reads.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self.reads:
            self.armed, self.reads = False, set()
            self.runs += 1
            self.action()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.reads.discard(event.request_id)


# --- waiting -----------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.1) -> T:
    """Call `predicate` until it returns something true, and return that; fail after `timeout` s.

    The predicate may raise (an AssertionError, say, when a process it waits on has ended) to
    give up early. The sleep between calls is polling, never synchronisation.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- the newscrawl command ---------------------------------------------------------------------

def newscrawl(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
              unset: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run `newscrawl ARGS` in its own process from the project's root, as a user would: the
    venv's console script (`python -m newscrawl.ops.cli` where there is none).

    `env` is added to this process's environment, without the variables named in `unset`.
    """
    removed = set(unset)
    inherited = {name: value for name, value in os.environ.items() if name not in removed}
    script = Path(sys.executable).with_name("newscrawl")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "newscrawl.ops.cli"]
    return subprocess.run([*command, *args], cwd=PROJECT_ROOT,
                          env={**inherited, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


# --- the real posts, rendered by Jekyll -------------------------------------------------------

_DATE_LINE = re.compile(r"^date:[^\n]*\n", re.MULTILINE)


def render_corpus_bodies(root: Path) -> dict[str, str]:
    """The body HTML of every real post of fixtures/corpus/ as Jekyll renders it (the site's
    engine, not our idea of it), by the post's file name; `root` is an empty work folder.

    The broken post has no date in its file name and an unreadable one in its front
    matter, so Jekyll would not publish it: it is given a day here to have its body.
    """
    source = root / "site"
    jekyll.write_scaffold(source, home_per_tag=5, now=datetime(2022, 6, 1, tzinfo=UTC))
    (source / "_posts").mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for path in sorted(CORPUS_POSTS.glob("*.md")):
        text, name = path.read_text(encoding="utf-8"), path.name
        if not re.match(r"\d{4}-\d\d-\d\d-", name):
            text, name = _DATE_LINE.sub("", text, count=1), "2022-05-26" + name
        (source / "_posts" / name).write_text(text, encoding="utf-8")
        names[path.stem.lstrip("-")[-18:]] = path.name
    jekyll.build(source, root / "out")
    bodies: dict[str, str] = {}
    for page in (root / "out").rglob("*.html"):
        article = re.search(r"(\d{18})\.html$", page.name)
        if article and article.group(1) in names:
            parsed = PostPage.parse(Selector(text=page.read_text(encoding="utf-8")))
            bodies[names[article.group(1)]] = parsed.body_html
    assert sorted(bodies) == sorted(names.values())
    return bodies


# --- records -----------------------------------------------------------------------------------

T0 = datetime(2021, 12, 31, 1, 0, tzinfo=UTC)
PUBLISHED = datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)
AID = "202112312232339262"


def sighting(kind: str, paragraphs: list[str], *, page_kind: str = "post",
             url: str = "https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html",
             category: str = "jingzhouribao", tag: str = "荆州日报新闻",
             seen: datetime = T0, **extra: Any) -> dict[str, Any]:
    """One sighting of article AID as the pipelines hand it to the store."""
    text = "\n".join(paragraphs)
    is_post = page_kind == "post"
    base = {
        "_id": AID, "info_code": "NW" + AID, "page_kind": page_kind, "title": "标题",
        "paragraphs": paragraphs, "text": text, "body_kind": kind, "body_url": url,
        "published_at": PUBLISHED, "published_at_raw": "(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25",
        "source": "荆州日报", "source_slug": "jingzhouribao", "source_from": "attribution",
        "categories": [category] if is_post else [], "tags": [tag] if is_post else [],
        "urls": [url] if is_post else [], "share_url": None, "origin_url": None,
        "content_hash": content_hash(text), "seen_at": seen,
    }
    base.update(extra)
    return base


def other_article(aid: str, paragraphs: list[str], published: datetime) -> dict[str, Any]:
    """A media sighting of another article than AID."""
    return sighting("media", paragraphs, _id=aid, info_code="NW" + aid, published_at=published,
                    url=f"https://finews.withounder.com/x/2021/12/31/NW{aid}.html")


# --- stored records against the mirror's ground truth ------------------------------------------

def stored(db: Database[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The stored articles in the ground truth's form, by id."""
    return {doc["_id"]: as_truth(doc) for doc in db["articles"].find()}


def assert_truth_stored(db: Database[dict[str, Any]], truth: Any,
                        ignore: tuple[str, ...] = ()) -> Comparison:
    """The articles collection holds exactly `truth` (records, or {id: record}), field by field.

    A time the pages cannot prove is accepted as the page's (fixtures/check.py).
    """
    records = list(truth.values()) if isinstance(truth, dict) else list(truth)
    comparison = compare(records, db["articles"].find())
    mismatched = {aid: {k: v for k, v in diff.items() if k not in ignore}
                  for aid, diff in comparison.mismatched.items()}
    mismatched = {aid: diff for aid, diff in mismatched.items() if diff}
    assert (comparison.missing, comparison.extra) == ([], []), comparison.summary_lines()
    assert mismatched == {}, comparison.summary_lines()
    return comparison


def assert_stored_once(db: Database[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> None:
    """Every article of `truth` stored (one document per id), field by field.

    `duplicate_of` is checked apart (tests/test_distributed.py's check_duplicate_links).
    """
    assert_truth_stored(db, truth, ignore=("duplicate_of",))


def crawl_listing_pages(mirror: Any) -> int:
    """Home, /emnews/ and every category page of the mirror."""
    return 1 + len(mirror.manifest["categories"]) + 1


# --- alert receivers: a webhook (http.server) and an SMTP server (aiosmtpd) -----------------

class WebhookReceiver:
    """A local HTTP server that records every POST's JSON body and answers each with the next
    of `statuses` (the last one repeats)."""

    def __init__(self, statuses: Iterable[int] = (200,)) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.statuses = list(statuses)
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with threading.Lock():
                    receiver.posts.append(json.loads(body))
                    status = receiver.statuses[min(len(receiver.posts), len(receiver.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret-token"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, made now (the `cryptography` package), and
    its key: (cert.pem, key.pem). The certificate is its own CA."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class MailServer:
    """aiosmtpd on 127.0.0.1: STARTTLS required (a self-signed certificate made in `folder`),
    then LOGIN/PLAIN with `user` and `password`; keeps every message it accepts."""

    def __init__(self, folder: Path, user: str, password: str) -> None:
        import socket
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.cert, key = self_signed_certificate(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.messages: list[Any] = []
        self.logins: list[str] = []
        server = self

        class Handler:
            async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
                server.messages.append(envelope)
                return "250 OK"

        def authenticator(smtp: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
                  and auth_data.password.decode() == password)
            if ok:
                server.logins.append(user)
            return AuthResult(success=ok)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     tls_context=context, require_starttls=True,
                                     authenticator=authenticator, auth_require_tls=True)

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
