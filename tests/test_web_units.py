"""The console's pure parts: cursors and bounds, filters from parameters, charts (escaped),
runs and jobs, the security rules, and the schedule commands on a real APScheduler."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from newscrawl.ops import query as q
from newscrawl.ops.schedule import commands
from newscrawl.web import charts, views
from newscrawl.web.security import Guard, StartRefused, bearer, is_loopback, same_origin, start_token
from pipelines.sources import SourceRegistry

T = datetime(2021, 12, 31, 0, 58, 25, 123000, tzinfo=UTC)


def test_a_cursor_round_trips_and_bad_ones_are_refused() -> None:
    cursor = views.Cursor(T, "202112312232339262")
    assert views.Cursor.decode(cursor.encode()) == cursor
    assert views.Cursor.decode("o40") == views.Cursor(offset=40)
    for bad in ("", "x", "123", "o-1", "abc_1"):
        with pytest.raises(views.BadRequest):
            views.Cursor.decode(bad)


def test_older_than_tightens_the_upper_bound_only() -> None:
    later, earlier = T + timedelta(hours=1), T - timedelta(hours=1)
    assert views.older_than({}, T) == {"published_at": {"$lt": T}}
    assert views.older_than({"published_at": {"$gte": earlier, "$lte": later}}, T) == \
        {"published_at": {"$gte": earlier, "$lt": T}}
    assert views.older_than({"published_at": {"$lt": earlier}}, T) == {"published_at": {"$lt": earlier}}
    assert views.older_than({"source_slug": "x"}, T) == {"source_slug": "x", "published_at": {"$lt": T}}


def test_filters_come_from_parameters_as_newscrawl_query_reads_them() -> None:
    registry = SourceRegistry.load()
    filters = views.filters_from_params({"source": "荆州日报", "since": "2021-12-30", "words": " ",
                                         "until": ""}, ["同比增长", " "], registry, False)
    assert filters == q.Filters(source_slug="jingzhouribao", since=q.since_bound("2021-12-30"),
                                phrases=("同比增长",))
    with pytest.raises(views.BadRequest, match="expected a date"):
        views.filters_from_params({"since": "yesterday"}, [], registry, False)
    with pytest.raises(views.BadRequest, match="empty range"):
        views.filters_from_params({"since": "2021-12-31", "until": "2021-12-30"}, [], registry, False)
    with pytest.raises(views.BadRequest, match="limit"):
        views.page_size({"limit": "100000"})
    assert views.page_size({}) == views.PAGE_SIZE


def test_charts_escape_labels_and_draw_one_bar_per_value() -> None:
    svg = charts.runs_chart("<job>", [{"stored": 3, "updated": 1, "rejected": 0, "duration": 12.5}],
                            ["<script>"])
    assert "<job>" not in svg and "&lt;job&gt;" in svg and "<script>" not in svg
    assert svg.count("<rect") == 4
    hourly = charts.hourly_chart(["12-31 08:00", "12-31 09:00"], {"<b>媒体</b>": [2, 0], "b": [1, 3]})
    assert "<b>" not in hourly and "&lt;b&gt;媒体&lt;/b&gt; (2)" in hourly
    assert hourly.count("<rect") == 3 + 2  # non-zero bars, then the legend's swatches
    assert "no articles" in charts.hourly_chart([], {})


def test_runs_are_named_by_their_job_and_show_health_where_present() -> None:
    jobs = [SimpleNamespace(name="media", spider="finews", args={"categories": "a,b"}),
            SimpleNamespace(name="full", spider="finews", args={})]
    run = {"spider": "finews", "arguments": {"categories": "a,b", "_job": "x"}}
    assert views.job_of_run(run, jobs) == "media"
    assert views.job_of_run({"spider": "finews", "arguments": {}}, jobs) == "full"
    assert views.job_of_run({"spider": "share", "arguments": {"from_db": 1}}, jobs) == "share from_db=1"
    # A run that names its job (RunRecorder, NEWSCRAWL_JOB) is that job's, whatever its arguments.
    assert views.job_of_run({"spider": "finews", "job": "nightly", "arguments": {}}, jobs) == "nightly"
    assert views.health_status({"health": {"status": "warn", "failed": []}}) == "warn"
    assert views.health_status({}) == "—"
    rows = views.run_rows([{"_id": "r", "spider": "finews", "arguments": {}, "started_at": T,
                            "finished_at": T + timedelta(seconds=75), "status": "finished",
                            "outcome": "finished", "counts": {"stored": 5}, "errors": []}], jobs)
    assert (rows[0].job, rows[0].duration, rows[0].health) == ("full", "1m15s", "—")
    points, labels = views.chart_points(rows)
    assert labels == ["2021-12-31 00:58:25Z"]
    assert points == [{"stored": 5.0, "updated": 0.0, "rejected": 0.0, "duration": 75.0}]


def test_the_bind_rule_and_the_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    token, made = start_token("127.0.0.1", None)
    assert made and len(token) >= 16
    with pytest.raises(StartRefused, match="NEWSCRAWL_WEB_TOKEN"):
        start_token("0.0.0.0", None)
    with pytest.raises(StartRefused, match="shorter"):
        start_token("0.0.0.0", "short")
    assert start_token("0.0.0.0", "a-long-enough-token-123") == ("a-long-enough-token-123", False)
    assert bearer("Bearer abc") == "abc" and bearer("Basic abc") is None


def test_sessions_and_csrf() -> None:
    guard = Guard("a-long-enough-token-123", open_reads=False)
    assert guard.login("wrong") is None
    session = guard.login("a-long-enough-token-123")
    assert session and guard.signed_in(session)
    assert guard.csrf_ok(session, guard.csrf_token(session))
    assert not guard.csrf_ok(session, guard.csrf_token("another"))
    assert not guard.csrf_ok(None, guard.csrf_token(None))
    assert guard.may_read(session, None) and guard.may_read(None, "Bearer a-long-enough-token-123")
    assert not guard.may_read(None, None)
    guard.logout(session)
    assert not guard.signed_in(session)
    assert same_origin("http://127.0.0.1:8321", None, "127.0.0.1:8321")
    assert not same_origin("http://evil.example", None, "127.0.0.1:8321")
    assert not same_origin("null", None, "127.0.0.1:8321")
    assert same_origin(None, None, "127.0.0.1:8321")


def fired(calls: list[str]) -> None:
    calls.append("fired")


def test_commands_run_pause_and_resume_a_job_of_a_real_scheduler() -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    calls: list[str] = []
    scheduler: Any = BackgroundScheduler(timezone=UTC)
    scheduler.start()
    try:
        scheduler.add_job(fired, "interval", days=7, id="feed", args=[calls])
        assert commands.apply(scheduler, {"job": "nope", "action": "run"})[0] == "failed"
        assert commands.apply(scheduler, {"job": "feed", "action": "pause"}) == ("done", "paused")
        assert scheduler.get_job("feed").next_run_time is None
        assert commands.apply(scheduler, {"job": "feed", "action": "run"})[0] == "failed"
        status, detail = commands.apply(scheduler, {"job": "feed", "action": "resume"})
        assert status == "done" and detail.startswith("resumed, next firing")
        assert commands.apply(scheduler, {"job": "feed", "action": "run"}) == ("done", "fired now")
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == ["fired"]
        assert scheduler.get_job("feed").next_run_time > datetime.now(UTC) + timedelta(days=6)
    finally:
        scheduler.shutdown(wait=False)
    with pytest.raises(ValueError):
        commands.command_document("feed", "delete", "test")
