"""Monitors after every run (newscrawl.monitoring): the pure judges, the alerts against real
receivers (http.server, aiosmtpd with STARTTLS and a login), and crawls of the mirror, healthy
and with a changed layout."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from newscrawl.monitoring.alerts import AlertConfig, send_alerts
from newscrawl.monitoring.check import monitor_run
from newscrawl.monitoring.monitors import (
    DEFAULT_THRESHOLDS,
    ThresholdError,
    combined_run,
    evaluate,
    parse_thresholds,
)
from tests.conftest import CrawlRunner
from tests.helpers import MailServer, WebhookReceiver

T0 = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)
HEALTHY = {"pages": 589, "article_pages": 528, "items": 328, "stored": 303, "unchanged": 13,
           "requests": 589, "cleaned": 328, "share_answered": 200, "share_not_found": 20}


def run(counts: dict[str, int] | None = None, *, minutes: float = 1, start: datetime = T0,
        errors: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"_id": f"finews-{start:%H%M%S}-1", "spider": "finews", "job": "finews",
            "started_at": start, "finished_at": start + timedelta(minutes=minutes),
            "status": "finished", "outcome": "finished",
            "counts": dict(HEALTHY if counts is None else counts),
            "errors": errors or [], **extra}


def history(n: int = 5, **kwargs: Any) -> list[dict[str, Any]]:
    return [run(start=T0 - timedelta(hours=i + 1), **kwargs) for i in range(n)]


def failed_monitors(health: dict[str, Any]) -> dict[str, str]:
    return {f["monitor"]: f["level"] for f in health["failed"]}


# --- the judges (pure) ----------------------------------------------------------------------

def test_a_healthy_run_of_the_mirror_passes_every_monitor() -> None:
    health = evaluate(run(), history(), DEFAULT_THRESHOLDS, T0)
    assert health == {"status": "ok", "failed": [], "checked_at": T0, "alerts": []}


def test_a_changed_layout_fails_on_empty_pages() -> None:
    broken = {"pages": 400, "article_pages": 300, "requests": 400, "cleaned": 0, "clean_rejected": 300,
              "empty_body": 300, "rejected": 300}
    health = evaluate(run(broken), history(), DEFAULT_THRESHOLDS, T0)
    assert health["status"] == "fail"
    failed = {f["monitor"]: f for f in health["failed"]}
    assert failed["empty_pages"]["level"] == "fail"
    assert (failed["empty_pages"]["value"], failed["empty_pages"]["threshold"]) == (1.0, 0.5)
    assert failed["empty_pages"]["message"] == ("article pages that parsed to no article: 100.0% "
                                                "(fail: at least 50.0%)")
    assert failed["missing_paragraphs"]["level"] == "fail"


def test_nothing_seen_fails_and_a_drop_against_the_usual_warns_or_fails() -> None:
    assert failed_monitors(evaluate(run({"pages": 3}), history(), DEFAULT_THRESHOLDS, T0)) == {
        "seen": "fail", "seen_vs_usual": "fail"}
    usual = sum(HEALTHY[k] for k in ("stored", "unchanged"))  # 316 seen
    third = {**HEALTHY, "stored": usual // 3, "unchanged": 0}
    assert failed_monitors(evaluate(run(third), history(), DEFAULT_THRESHOLDS, T0)) == {
        "seen_vs_usual": "warn"}
    # too short a history: nothing to compare with
    assert evaluate(run(third), history(2), DEFAULT_THRESHOLDS, T0)["status"] == "ok"


def test_share_host_errors_retries_backoff_and_duration() -> None:
    counts = {**HEALTHY, "share_answered": 100, "share_failed": 80, "share_not_found": 60,
              "retries": 100, "backoff_ms": 400_000}
    errors = [{"type": "log/ERROR", "count": 3}, {"type": "http/503", "count": 9}]
    health = evaluate(run(counts, minutes=4, errors=errors), history(), DEFAULT_THRESHOLDS, T0)
    assert failed_monitors(health) == {"share_failures": "warn", "share_rejects": "warn", "errors": "warn",
                                       "retries": "warn", "backoff": "warn", "duration_vs_usual": "warn"}
    assert health["status"] == "warn"


def test_thresholds_from_settings_and_schedule_override_the_defaults() -> None:
    limits = parse_thresholds('{"empty_pages": {"warn": 0.2}, "errors": {"warn": null, "fail": 5}}')
    assert (limits["empty_pages"].warn, limits["empty_pages"].fail) == (0.2, 0.5)
    assert (limits["errors"].warn, limits["errors"].fail) == (None, 5)
    job = parse_thresholds({"errors": {"fail": False}}, base=limits)  # TOML has no null
    assert (job["errors"].warn, job["errors"].fail) == (None, None)
    for bad in ('{"nope": {"warn": 1}}', '{"errors": {"warn": "x"}}', '{"errors": 3}', "{"):
        with pytest.raises(ThresholdError):
            parse_thresholds(bad)


def test_a_distributed_run_is_judged_as_the_sum_of_its_processes() -> None:
    half = {k: v // 2 for k, v in HEALTHY.items()}
    parts = [run(half, start=T0, minutes=1, errors=[{"type": "log/ERROR", "count": 1}]),
             run(half, start=T0 + timedelta(seconds=5), minutes=2,
                 errors=[{"type": "log/ERROR", "count": 2}])]
    whole = combined_run(parts)
    assert whole["counts"]["stored"] == 2 * (HEALTHY["stored"] // 2)
    assert whole["errors"] == [{"type": "log/ERROR", "count": 3}]
    assert (whole["started_at"], whole["finished_at"]) == (T0, T0 + timedelta(seconds=125))


# --- alerts against real receivers ----------------------------------------------------------

@pytest.fixture
def mail_server(tmp_path: Path) -> Iterator[MailServer]:
    with MailServer(tmp_path, "alerts", "s3cret-pass") as server:
        yield server


def alert_env(receiver: WebhookReceiver, mail: MailServer) -> dict[str, str]:
    return {"NEWSCRAWL_ALERT_WEBHOOK_URL": receiver.url, "NEWSCRAWL_ALERT_SMTP_HOST": "127.0.0.1",
            "NEWSCRAWL_ALERT_SMTP_PORT": str(mail.port), "NEWSCRAWL_ALERT_SMTP_USER": "alerts",
            "NEWSCRAWL_ALERT_SMTP_PASSWORD": "s3cret-pass", "NEWSCRAWL_ALERT_SMTP_CAFILE": str(mail.cert),
            "NEWSCRAWL_ALERT_EMAIL_FROM": "newscrawl@example.org",
            "NEWSCRAWL_ALERT_EMAIL_TO": "ops@example.org", "NEWSCRAWL_ALERT_BACKOFF": "0.1"}


@pytest.mark.integration
def test_alerts_go_out_by_webhook_and_by_mail_over_starttls(mail_server: MailServer) -> None:
    with WebhookReceiver() as receiver:
        env = alert_env(receiver, mail_server)
        config = AlertConfig.from_values(env, env)
        health = evaluate(run({"pages": 1}), [], DEFAULT_THRESHOLDS, T0)
        results = send_alerts(config, "finews", run({"pages": 1}), health)
    assert [(r["channel"], r["sent"], r["attempts"]) for r in results] == [("webhook", True, 1),
                                                                           ("email", True, 1)]
    assert len(receiver.posts) == 1
    assert receiver.posts[0]["text"].startswith("newscrawl: finews CRITICAL: run finews-")
    assert receiver.posts[0]["failed"][0]["monitor"] == "seen"
    assert mail_server.logins == ["alerts"]
    (message,) = mail_server.messages
    assert message.rcpt_tos == ["ops@example.org"]
    assert b"Subject: [newscrawl] finews: FAIL" in message.content


@pytest.mark.integration
def test_an_alert_that_cannot_be_sent_is_retried_then_recorded_without_its_secrets(
        mail_server: MailServer, caplog: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver(statuses=[500]) as receiver:
        env = {**alert_env(receiver, mail_server), "NEWSCRAWL_ALERT_SMTP_PASSWORD": "wrong-pass",
               "NEWSCRAWL_ALERT_RETRIES": "2", "NEWSCRAWL_ALERT_TIMEOUT": "2"}
        config = AlertConfig.from_values(env, env)
        health = evaluate(run({"pages": 1}), [], DEFAULT_THRESHOLDS, T0)
        results = send_alerts(config, "finews", run({"pages": 1}), health, sleep=lambda s: None)
    assert len(receiver.posts) == 3
    webhook, email = results
    assert (webhook["sent"], webhook["attempts"], webhook["error"]) == (
        False, 3, "HTTP 500 Internal Server Error")
    assert (email["sent"], email["attempts"]) == (False, 3)
    # refused (535), or aiosmtpd stops answering smtplib's next mechanism after a refusal
    assert re.search(r"SMTPAuthenticationError|SMTPServerDisconnected", email["error"])
    logged = caplog.text + json.dumps(results)
    assert "secret-token" not in logged and "wrong-pass" not in logged
    assert mail_server.messages == []


# --- crawls of the mirror ------------------------------------------------------------------

def broken_layout_mirror(root: Path, into: Path) -> Path:
    """A copy of the mirror whose post pages changed their layout: no <section>, so every post
    page parses to no title and no body (listings unchanged)."""
    shutil.copytree(root, into)
    pages = 0
    for page in (into / "finews.withounder.com").rglob("*.html"):
        if re.search(r"/\d{4}/\d\d/\d\d/", page.as_posix()):
            html = page.read_text(encoding="utf-8")
            changed = html.replace("<section", '<div class="post-v2"').replace("</section>", "</div>")
            page.write_text(changed, encoding="utf-8")
            pages += 1
    assert pages > 100
    return into


def runs_of(db: Database[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(db["crawl_runs"].find().sort("started_at", -1))


@pytest.mark.integration
def test_a_changed_layout_fails_its_monitor_and_alerts_once_a_healthy_run_alerts_nothing(
        mirror: Any, mirror_server: Any, mongo_uri: str, mongo_db: Database[dict[str, Any]],
        tmp_path: Path, mail_server: MailServer) -> None:
    from fixtures.server import MirrorServer

    with WebhookReceiver() as receiver:
        env = alert_env(receiver, mail_server)
        healthy = CrawlRunner(mongo_uri, mirror_server.host_map, mongo_db.name, tmp_path / "ok")
        healthy("finews", env=env)
        (first,) = runs_of(mongo_db)
        assert first["health"]["status"] == "ok", first["health"]
        assert (receiver.posts, mail_server.messages) == ([], [])

        changed = broken_layout_mirror(mirror.root, tmp_path / "changed")
        with MirrorServer(changed) as server:
            broken = CrawlRunner(mongo_uri, server.host_map, mongo_db.name, tmp_path / "broken")
            broken("finews", args={"refresh": "1"}, env=env)
    newest = runs_of(mongo_db)[0]
    assert newest["status"] == "finished"
    health = newest["health"]
    assert health["status"] == "fail"
    assert {"empty_pages": "fail"}.items() <= failed_monitors(health).items()
    assert [(a["channel"], a["sent"], a["attempts"]) for a in health["alerts"]] == [
        ("webhook", True, 1), ("email", True, 1)]
    assert len(receiver.posts) == 1 and len(mail_server.messages) == 1
    assert receiver.posts[0]["run"] == newest["_id"] and receiver.posts[0]["status"] == "fail"
    # judged again (a second look): no second alert
    config = AlertConfig.from_values(env, env)
    monitor_run(mongo_db["crawl_runs"], newest, DEFAULT_THRESHOLDS, config, datetime.now(UTC))
    assert len(receiver.posts) == 1 and len(mail_server.messages) == 1
    again = mongo_db["crawl_runs"].find_one({"_id": newest["_id"]})
    assert again is not None and again["health"]["alerts"] == health["alerts"]  # still on record


@pytest.mark.integration
def test_a_receiver_answering_500_is_retried_and_the_crawl_still_finishes(
        crawl: CrawlRunner, mongo_db: Database[dict[str, Any]]) -> None:
    with WebhookReceiver(statuses=[500]) as receiver:
        # a run that sees nothing (a category the mirror does not have) fails its monitors
        result = crawl("finews", args={"categories": "no-such-category"}, check=False,
                       env={"NEWSCRAWL_ALERT_WEBHOOK_URL": receiver.url, "NEWSCRAWL_ALERT_RETRIES": "2",
                            "NEWSCRAWL_ALERT_BACKOFF": "0.1"})
    assert result.returncode == 0, result.log[-3000:]
    (only,) = runs_of(mongo_db)
    assert (only["status"], only["outcome"]) == ("finished", "finished")
    assert only["health"]["status"] == "fail"
    assert only["health"]["alerts"] == [{"channel": "webhook", "sent": False, "attempts": 3,
                                         "error": "HTTP 500 Internal Server Error"}]
    assert len(receiver.posts) == 3
    assert "secret-token" not in result.log


# --- judging against the database ------------------------------------------------------------

def recorded(db: Database[dict[str, Any]], run_id: str, start: datetime, *, status: str = "finished",
             pid: int = 1, **extra: Any) -> dict[str, Any]:
    import socket

    from newscrawl.components.run_recorder import ensure_run_indexes

    ensure_run_indexes(db["crawl_runs"])
    document = {**run(start=start), "_id": run_id, "status": status, "host": socket.gethostname(),
                "pid": pid, "distributed_run": None, **extra}
    if status == "running":
        document.update(finished_at=None, outcome=None, counts={})
    db["crawl_runs"].insert_one(document)
    return document


@pytest.mark.integration
def test_a_distributed_run_is_judged_by_its_last_process_once(mongo_db: Database[dict[str, Any]]) -> None:
    import os

    runs = mongo_db["crawl_runs"]
    first = recorded(mongo_db, "finews-a-1", T0, distributed_run="together")
    recorded(mongo_db, "finews-b-2", T0, status="running", pid=os.getpid(), distributed_run="together")
    with WebhookReceiver() as receiver:
        alerts = AlertConfig.from_values({}, {"NEWSCRAWL_ALERT_WEBHOOK_URL": receiver.url})
        assert monitor_run(runs, first, DEFAULT_THRESHOLDS, alerts, T0) is None  # b still going
        assert runs.count_documents({"health": {"$exists": True}}) == 0
        runs.update_one({"_id": "finews-b-2"}, {"$set": {"status": "finished", "outcome": "finished",
                                                         "finished_at": T0 + timedelta(minutes=2),
                                                         "counts": {"pages": 3}}})
        second = runs.find_one({"_id": "finews-b-2"})
        assert second is not None
        judged = monitor_run(runs, second, DEFAULT_THRESHOLDS, alerts, T0)
        assert judged is not None and judged["counts"]["pages"] == HEALTHY["pages"] + 3
        both = [d["health"] for d in runs.find().sort("_id", 1)]
        assert both[0] == both[1] and both[0]["status"] == "ok"
        assert receiver.posts == []


@pytest.mark.integration
def test_a_lost_run_is_judged_and_alerted_by_the_next_run_of_its_job(
        mongo_db: Database[dict[str, Any]]) -> None:
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    runs = mongo_db["crawl_runs"]
    recorded(mongo_db, "finews-lost", T0 - timedelta(hours=1), status="running", pid=gone.pid)
    latest = recorded(mongo_db, "finews-next", T0)
    with WebhookReceiver() as receiver:
        alerts = AlertConfig.from_values({}, {"NEWSCRAWL_ALERT_WEBHOOK_URL": receiver.url})
        monitor_run(runs, latest, DEFAULT_THRESHOLDS, alerts, T0)
        monitor_run(runs, latest, DEFAULT_THRESHOLDS, alerts, T0)  # judged twice: alerted once
    lost = runs.find_one({"_id": "finews-lost"})
    assert lost is not None and lost["health"]["status"] == "fail"
    assert [f["monitor"] for f in lost["health"]["failed"]] == ["lost"]
    assert [(a["channel"], a["sent"]) for a in lost["health"]["alerts"]] == [("webhook", True)]
    assert [post["run"] for post in receiver.posts] == ["finews-lost"]
