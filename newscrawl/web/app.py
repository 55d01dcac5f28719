"""The console's Starlette application: thin handlers over `views`, pages from templates/.

Every page is rendered with autoescaping on: an article's title, paragraphs and any other
field are text, whatever markup they hold. No page needs a script; the Content-Security-
Policy forbids any (and any outside asset)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from pymongo import DESCENDING, MongoClient
from pymongo.errors import PyMongoError
from starlette.applications import Starlette
from starlette.datastructures import MultiDict
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from newscrawl.ops import query as q
from newscrawl.ops.schedule import commands as schedule_commands
from newscrawl.web import charts, views
from newscrawl.web.security import SESSION_COOKIE, Guard, same_origin

HERE = Path(__file__).parent
logger = logging.getLogger("newscrawl.web")
Document = dict[str, Any]

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]


@dataclass
class Console:
    """What the handlers share: the database, the schedule file, the guard."""

    client: MongoClient[Document] | None
    database: str
    articles: str
    runs: str
    schedule_file: Path
    guard: Guard
    registry: Any
    problem: str | None = None  # why there is no database (shown on every page that needs it)
    _text_index: bool | None = field(default=None, repr=False)

    def db(self) -> Any:
        if self.client is None:
            raise views.DatabaseMissing(self.problem or "no database configured")
        return self.client[self.database]

    def text_index(self) -> bool:
        if self._text_index is None:
            self._text_index = q.has_text_index(self.db()[self.articles])
        return self._text_index


class SecurityHeaders:
    """Adds the security headers to every answer (a plain ASGI middleware: streams pass)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = lambda d: (d.astimezone(q.SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
                                     if isinstance(d, datetime) else "—")
    env.filters["utc"] = lambda d: (d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                                    if isinstance(d, datetime) else "—")
    env.filters["tojson_text"] = lambda v: json.dumps(q.jsonable(v), ensure_ascii=False, indent=1)
    return env


templates = Jinja2Templates(env=environment())


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def session_of(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    c = console(request)
    session = session_of(request)
    return templates.TemplateResponse(request, name, {
        "signed_in": c.guard.signed_in(session), "csrf": c.guard.csrf_token(session),
        "nav": name.split(".")[0], **context}, status_code=status)


def readable(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Pages and API answers: open on loopback, else for a session or the bearer token."""
    def guarded(request: Request) -> Any:
        c = console(request)
        if not c.guard.may_read(session_of(request), request.headers.get("authorization")):
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "authentication required"}, status_code=401)
            return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
        return handler(request)
    guarded.__name__ = handler.__name__
    return guarded


# --- runs -------------------------------------------------------------------------------------

def _jobs(c: Console) -> tuple[list[Any], Any, str | None]:
    config, problem = views.load_schedule(c.schedule_file)
    return (list(config.jobs) if config else []), config, problem


@readable
def runs_page(request: Request) -> Response:
    c = console(request)
    jobs, _, _ = _jobs(c)
    found = list(c.db()[c.runs].find({}, {"errors": 0}).sort("started_at", DESCENDING).limit(300))
    rows = views.run_rows(found, jobs)
    svgs = [charts.runs_chart(job, *views.chart_points(group))
            for job, group in sorted(views.runs_by_job(rows).items())]
    return page(request, "runs.html", rows=rows[:100], charts=svgs, total=len(found))


@readable
def run_page(request: Request) -> Response:
    c = console(request)
    run = c.db()[c.runs].find_one({"_id": request.path_params["run_id"]})
    if run is None:
        raise HTTPException(404, "no such run")
    jobs, config, _ = _jobs(c)
    row = views.run_rows([run], jobs)[0]
    log = views.run_log(run, jobs, config.log_dir if config else None)
    return page(request, "run.html", row=row, run=run, log=log)


@readable
def run_log(request: Request) -> Response:
    c = console(request)
    run = c.db()[c.runs].find_one({"_id": request.path_params["run_id"]})
    jobs, config, _ = _jobs(c)
    log = views.run_log(run, jobs, config.log_dir if config else None) if run else None
    if log is None:
        raise HTTPException(404, "no local log for this run")
    return PlainTextResponse(views.log_tail(log))


# --- schedule ---------------------------------------------------------------------------------

@readable
def schedule_page(request: Request) -> Response:
    c = console(request)
    _, config, problem = _jobs(c)
    rows = views.schedule_rows(c.db(), config, c.runs) if config else []
    return page(request, "schedule.html", rows=rows, problem=problem, file=c.schedule_file)


async def schedule_action(request: Request) -> Response:
    c = console(request)
    session = session_of(request)
    form = await request.form()
    if not c.guard.signed_in(session):
        return RedirectResponse("/login?next=/schedule", status_code=303)
    csrf = form.get("csrf")
    if not c.guard.csrf_ok(session, csrf if isinstance(csrf, str) else None) or not same_origin(
            request.headers.get("origin"), request.headers.get("referer"), request.headers.get("host")):
        raise HTTPException(403, "this form is not from this console (CSRF check failed): reload the "
                                 "page and try again")
    job, action = request.path_params["job"], request.path_params["action"]
    _, config, _ = _jobs(c)
    if config is None or job not in {j.name for j in config.jobs}:
        raise HTTPException(404, f"no job {job!r} in {c.schedule_file}")
    if action not in schedule_commands.ACTIONS:
        raise HTTPException(404, f"no action {action!r}")

    def send() -> None:
        collection = c.db()[schedule_commands.COMMANDS_COLLECTION]
        schedule_commands.ensure_indexes(collection)
        who = f"web {request.client.host if request.client else '?'}"
        schedule_commands.request(collection, job, action, who)

    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(send)
    return RedirectResponse("/schedule", status_code=303)


# --- articles ---------------------------------------------------------------------------------

def _filters(request: Request) -> q.Filters:
    c = console(request)
    params = request.query_params
    filters = views.filters_from_params(params, params.getlist("phrase"), c.registry, False)
    # Words or phrases: the text index (asked once a console), else the word index.
    return q.with_search_indexes(c.db()[c.articles], filters, c.text_index()) \
        if filters.text or filters.phrases else filters


def _cursor(request: Request) -> views.Cursor | None:
    raw = request.query_params.get("cursor")
    return views.Cursor.decode(raw) if raw else None


def _with(params: MultiDict, **changes: str | None) -> str:
    items = [(k, v) for k, v in params.multi_items() if k not in changes and v]
    items += [(k, v) for k, v in changes.items() if v]
    return urlencode(items)


@readable
def articles_page(request: Request) -> Response:
    c = console(request)
    filters = _filters(request)
    size = views.page_size(request.query_params)
    result = views.article_page(c.db()[c.articles], filters, _cursor(request), size,
                                views.LIST_FIELDS)
    params = request.query_params
    next_link = ("/articles?" + _with(MultiDict(params), cursor=result.next.encode())
                 if result.next else None)
    return page(request, "articles.html", articles=result.articles, params=params,
                phrases=params.getlist("phrase"), next_link=next_link,
                first_link="/articles?" + _with(MultiDict(params), cursor=None),
                api_link="/api/articles?" + _with(MultiDict(params), cursor=None),
                export_jsonl="/api/articles?" + _with(MultiDict(params), cursor=None, format="jsonl"),
                export_csv="/api/articles?" + _with(MultiDict(params), cursor=None, format="csv"),
                deep=bool(params.get("cursor")))


@readable
def article_page(request: Request) -> Response:
    c = console(request)
    view = views.article_view(c.db()[c.articles], request.path_params["article_id"])
    if view is None:
        raise HTTPException(404, "no such article")
    return page(request, "article.html", v=view, a=view.article, proof=views.proof_text(view.article))


@readable
def chart_page(request: Request) -> Response:
    c = console(request)
    params = request.query_params
    collection = c.db()[c.articles]
    filters = views.filters_from_params({k: params.get(k) for k in ("source", "category")}, [],
                                        c.registry, False)
    since, until = views.default_range(collection)
    try:
        if params.get("since"):
            since = q.since_bound(params["since"]).at
        if params.get("until"):
            until = q.until_bound(params["until"]).at
    except ValueError as exc:
        raise views.BadRequest(str(exc)) from None
    chart = views.hourly_counts(collection, filters, since, until)
    return page(request, "chart.html", chart=chart, svg=charts.hourly_chart(chart.hours, chart.series),
                params=params)


# --- the JSON API -----------------------------------------------------------------------------

@readable
def api_articles(request: Request) -> Response:
    c = console(request)
    filters = _filters(request)
    params = request.query_params
    collection = c.db()[c.articles]
    export = params.get("format")
    if export in ("jsonl", "csv"):
        limit = int(params["limit"]) if (params.get("limit") or "").isdigit() else 0
        documents = views.all_articles(collection, filters, limit)
        first = list(_take(documents, 1))  # a read error shows as 503 before the stream starts

        def lines() -> Iterator[str]:
            rest = _chain(first, documents)
            if export == "jsonl":
                for doc in rest:
                    yield q.json_line(doc) + "\n"
            else:
                yield from q.csv_lines(rest)

        media = "application/x-ndjson" if export == "jsonl" else "text/csv"
        return StreamingResponse(lines(), media_type=f"{media}; charset=utf-8", headers={
            "content-disposition": f'attachment; filename="articles.{export}"'})
    if export:
        raise views.BadRequest(f"format: {export!r} (jsonl or csv; none for JSON pages)")
    result = views.article_page(collection, filters, _cursor(request), views.page_size(params, 20))
    return JSONResponse({"articles": [q.jsonable(d) for d in result.articles],
                         "next": result.next.encode() if result.next else None})


def _take(iterator: Iterator[Document], n: int) -> Iterator[Document]:
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


def _chain(first: list[Document], rest: Iterator[Document]) -> Iterator[Document]:
    yield from first
    yield from rest


@readable
def api_article(request: Request) -> Response:
    c = console(request)
    doc = c.db()[c.articles].find_one({"_id": request.path_params["article_id"]})
    if doc is None:
        return JSONResponse({"error": "no such article"}, status_code=404)
    return JSONResponse(q.jsonable(doc))


@readable
def api_runs(request: Request) -> Response:
    c = console(request)
    params = request.query_params
    size = views.page_size(params, 20)
    query: Document = {"spider": params["spider"]} if params.get("spider") else {}
    if params.get("cursor"):
        cursor = views.Cursor.decode(params["cursor"])
        query["started_at"] = {"$lt": cursor.published_at}
    found = list(c.db()[c.runs].find(query).sort("started_at", DESCENDING).limit(size + 1))
    more = len(found) > size
    found = found[:size]
    next_cursor = (views.Cursor(found[-1]["started_at"], str(found[-1]["_id"])).encode()
                   if more and found else None)
    return JSONResponse({"runs": [q.jsonable(r) for r in found], "next": next_cursor})


# --- login ------------------------------------------------------------------------------------

def _next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/schedule"


async def login(request: Request) -> Response:
    c = console(request)
    if request.method == "GET":
        return page(request, "login.html", next=_next(request.query_params.get("next")), error=None)
    form = await request.form()
    if not same_origin(request.headers.get("origin"), request.headers.get("referer"),
                       request.headers.get("host")):
        raise HTTPException(403, "this form is not from this console")
    token = form.get("token")
    session = c.guard.login(token if isinstance(token, str) else None)
    target = _next(str(form.get("next") or ""))
    if session is None:
        return page(request, "login.html", 401, next=target, error="wrong token")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    c = console(request)
    form = await request.form()
    csrf = form.get("csrf")
    if c.guard.csrf_ok(session_of(request), csrf if isinstance(csrf, str) else None):
        c.guard.logout(session_of(request))
    response = RedirectResponse("/runs", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def home(request: Request) -> Response:
    return RedirectResponse("/runs", status_code=303)


def favicon(request: Request) -> Response:
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


# --- errors -----------------------------------------------------------------------------------

def _error(request: Request, status: int, title: str, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    try:
        return page(request, "error.html", status, title=title, message=message)
    except Exception:  # the page itself failed: plain text, never a traceback
        return PlainTextResponse(f"{title}: {message}", status_code=status)


def database_error(request: Request, exc: Exception) -> Response:
    from newscrawl.database import one_line

    return _error(request, 503, "The database is not answering",
                  f"newscrawl could not read {console(request).database}: {one_line(exc)}. "
                  "Start it (newscrawl db start) or check MONGO_URI, then reload this page.")


def bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "Cannot show that", str(exc))


def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed"}
    return _error(request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))


def server_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return _error(request, 500, "Something went wrong",
                  f"{type(exc).__name__} (the console's log has the details)")


def create_app(c: Console, *, allowed_hosts: list[str] | None = None) -> Starlette:
    routes = [
        Route("/", home),
        Route("/favicon.ico", favicon),
        Route("/runs", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/log", run_log),
        Route("/schedule", schedule_page),
        Route("/schedule/{job}/{action}", schedule_action, methods=["POST"]),
        Route("/articles", articles_page),
        Route("/articles/{article_id}", article_page),
        Route("/chart", chart_page),
        Route("/api/articles", api_articles),
        Route("/api/articles/{article_id}", api_article),
        Route("/api/runs", api_runs),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts:  # a loopback console answers only to its own names (DNS rebinding)
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        PyMongoError: database_error, views.DatabaseMissing: database_error,
        views.BadRequest: bad_request, HTTPException: http_error, Exception: server_error})
    app.state.console = c
    return app
