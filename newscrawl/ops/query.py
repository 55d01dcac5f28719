"""`newscrawl query`: articles for downstream teams, by source, category, dates and text.

Pure parts first (bounds, source names, `build_query`, output formats), then
the few functions that talk to the database. Every filter maps onto an index
of `pipelines.storage.ARTICLE_INDEXES` (see docs/schema.md, "Example queries").
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import DESCENDING
from pymongo.collection import Collection

from newscrawl.ops.command import UsageError, connect, count_option, print_lines, time_option
from pipelines import search
from pipelines.sources import SourceRegistry, pinyin_slug

Document = dict[str, Any]
SortSpec = list[tuple[str, Any]]

SHANGHAI = ZoneInfo("Asia/Shanghai")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
CSV_COLUMNS = ("_id", "published_at", "source", "title", "categories", "url")
TEXT_INDEX_KEY = "_fts"  # how MongoDB names the key of any text index


# --- bounds on published_at ------------------------------------------------------------------

@dataclass(frozen=True)
class TimeBound:
    at: datetime  # UTC
    inclusive: bool = True


def parse_moment(value: str) -> tuple[datetime, bool]:
    """A date (YYYY-MM-DD, Asia/Shanghai) or an ISO datetime (naive means Asia/Shanghai).

    Returns the moment in UTC and whether the value was a whole day."""
    text = value.strip()
    try:
        if _DAY.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime.combine(day, time(), SHANGHAI).astimezone(UTC), True
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r}: expected a date YYYY-MM-DD (Asia/Shanghai) "
                         "or an ISO datetime such as 2021-12-31T08:00:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    return moment.astimezone(UTC), False


def since_bound(value: str) -> TimeBound:
    """`--since`: from that day's Shanghai midnight, or from that moment, inclusive."""
    moment, _ = parse_moment(value)
    return TimeBound(moment, inclusive=True)


def until_bound(value: str) -> TimeBound:
    """`--until`: through the end of that Shanghai day, or up to that moment inclusive."""
    moment, whole_day = parse_moment(value)
    if whole_day:
        return TimeBound(moment + timedelta(days=1), inclusive=False)
    return TimeBound(moment, inclusive=True)


# --- sources ---------------------------------------------------------------------------------

def source_slug(name_or_slug: str, registry: SourceRegistry) -> str:
    """The stored `source_slug` of a medium given by canonical name, alias or slug.

    A medium the registry does not know is stored under the pinyin of its name
    (as the site makes slugs), which is also what a slug maps to."""
    medium = registry.lookup(name_or_slug)
    if medium is not None:
        return medium.slug
    return pinyin_slug(name_or_slug.strip())


# --- the query -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    source_slug: str | None = None
    category: str | None = None
    since: TimeBound | None = None
    until: TimeBound | None = None
    text: str | None = None  # words, all of which a record must hold (pipelines.search)
    phrases: tuple[str, ...] = ()  # exact phrases of `text`
    text_index: bool = False  # the server has the `words_text` index: use $text
    word_index: bool = False  # no text index, but a complete word index (pipelines.word_index)


def build_query(filters: Filters) -> tuple[Document, SortSpec]:
    """The find() filter and sort for `filters`: newest first.

    Indexes: source (+ dates) -> `source_slug_published_at`; dates ->
    `published_at`; category -> `categories`; text -> `words_text` ($text,
    ranked by text score, then newest first) where the server has it, else a
    regex per word over `words` (a scan; `find_articles` ranks in the client).
    Phrases are a regex on `text`: served by the other filters' index only."""
    query: Document = {}
    if filters.source_slug:
        query["source_slug"] = filters.source_slug
    if filters.category:
        query["categories"] = filters.category
    published: Document = {}
    if filters.since:
        published["$gte" if filters.since.inclusive else "$gt"] = filters.since.at
    if filters.until:
        published["$lte" if filters.until.inclusive else "$lt"] = filters.until.at
    if published:
        query["published_at"] = published
    clauses: list[Document] = []
    sort: SortSpec = [("published_at", DESCENDING)]
    if filters.text:
        terms = search.query_terms(filters.text)
        # Every word, whole (a regex each: exact on any server; $text alone would take any word).
        clauses.append(search.word_filter(terms))
        if filters.text_index:
            query["$text"] = {"$search": " ".join(terms)}
            sort = [("score", {"$meta": "textScore"}), *sort, ("_id", DESCENDING)]
    if filters.phrases:
        clauses.append(search.phrase_filter(filters.phrases))
    for clause in clauses:
        for name, condition in clause.items():
            if name == "$and":
                query.setdefault("$and", []).extend(condition)
            else:
                query.setdefault("$and", []).append({name: condition})
    return query, sort


def validate(filters: Filters) -> None:
    if filters.since and filters.until and (
            filters.since.at > filters.until.at
            or (filters.since.at == filters.until.at and not filters.until.inclusive)):
        raise ValueError(f"empty range: --since starts at {iso_z(filters.since.at)}, "
                         f"--until ends at {iso_z(filters.until.at)}")
    if filters.text is not None and not search.query_terms(filters.text):
        raise ValueError(f"--text {filters.text!r}: no words in it")
    if any(not phrase.strip() for phrase in filters.phrases):
        raise ValueError("--phrase: empty")


# --- the database ----------------------------------------------------------------------------

def has_text_index(collection: Collection[Document]) -> bool:
    """Whether `words` has its text index (an older one on title and text does not count)."""
    return any(TEXT_INDEX_KEY in dict(info.get("key", [])) and search.WORDS_FIELD in info.get("weights", {})
               for info in collection.index_information().values())


PhraseReadings = list[tuple[frozenset[str], ...]]
NARROW_FROM = 1_000  # phrase candidates from which the edges' conditions are read too


def indexed_terms(filters: Filters) -> tuple[list[str], PhraseReadings] | None:
    """What the word index is read for: the query's words, and for each phrase the sets of
    words one of which a record holding it holds (`search.phrase_word_sets`); None when a
    phrase gives none (punctuation only, a word too short): then it scans."""
    terms = search.query_terms(filters.text) if filters.text else []
    phrases: PhraseReadings = []
    for phrase in filters.phrases:
        readings = search.phrase_word_sets(phrase)
        if readings is None:
            return None
        phrases.append(readings)
    return terms, phrases


def _holds_all(doc: Mapping[str, Any], terms: Sequence[str]) -> bool:
    tokens = set(str(doc.get(search.WORDS_FIELD) or "").split())
    return all(term in tokens for term in terms)


def find_indexed(collection: Collection[Document], filters: Filters, terms: Sequence[str],
                 phrases: PhraseReadings, limit: int) -> list[Document]:
    """--text and --phrase through the word index (no text index: FerretDB).

    The postings give the records holding every word, with their text scores and times,
    so the order is known before any record is read: only the records returned are read
    (with the other filters; and for phrases, their `text` first, newest first, until
    enough hold the phrases' exact characters)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from pipelines.word_index import WordIndex, article_id, rank, time_ms

    index = WordIndex(collection)
    others = build_query(dataclasses.replace(filters, text=None, phrases=(), word_index=False))[0]

    def holds_phrases(texts: Mapping[str, str], aid: str) -> bool:
        return aid in texts and all(phrase in texts[aid] for phrase in filters.phrases)

    if terms:
        candidates = index.candidates(terms, phrases)

        def fetch(ids: list[str]) -> dict[str, Document]:
            docs = {doc["_id"]: doc for doc in collection.find({**others, "_id": {"$in": ids}})}
            texts = {aid: str(doc.get("text") or "") for aid, doc in docs.items()}
            return {aid: doc for aid, doc in docs.items() if holds_phrases(texts, aid)}

        def check(doc: Document) -> tuple[float, int]:
            words = str(doc.get(search.WORDS_FIELD) or "")
            score = search.text_score(words, terms) if _holds_all(doc, terms) else 0.0
            return score, time_ms(doc.get("published_at"))

        return rank(candidates, fetch, check, limit)
    # Phrases alone: newest first among the records holding their words (times from the
    # postings, and from the records where those may be stale); the exact characters are
    # matched in `text` (FerretDB reads that field alone), a few records at a time.
    held = index.holders(phrases)
    conditions = [condition for phrase in filters.phrases
                  for condition in search.phrase_edge_conditions(phrase)]
    if conditions and len(held.columns) > NARROW_FROM:  # a few more words to read spare many texts
        held = held.restrict(index.holders(conditions).columns.ids)
    ids, times = held.columns.ids, held.columns.times.copy()
    if held.to_check:
        stale = sorted(article_id(n) for n in held.to_check)
        stored: dict[int, int] = {}
        for start in range(0, len(stale), 1000):
            for doc in collection.find({"_id": {"$in": stale[start:start + 1000]}}, {"published_at": 1}):
                stored[int(doc["_id"])] = time_ms(doc.get("published_at"))
        numbers = sorted(stored)
        times[np.searchsorted(ids, np.array(numbers, np.uint64))] = [stored[n] for n in numbers]
    order = ids[np.lexsort((ids, times))[::-1]]  # newest first, then the highest id
    found: list[str] = []
    step = max(2 * limit, 16) if limit else 1024
    start = 0

    def texts_of(wanted: list[str]) -> dict[str, str]:
        return {d["_id"]: str(d.get("text") or "")
                for d in collection.find({**others, "_id": {"$in": wanted}}, {"text": 1})}

    # The server reads records on two threads (FerretDB's cost is per record read).
    with ThreadPoolExecutor(2) as pool:
        while start < len(order) and not (limit and len(found) >= limit):
            part = [article_id(n) for n in order[start:start + step].tolist()]
            texts: dict[str, str] = {}
            halves = [half for half in (part[:len(part) // 2], part[len(part) // 2:]) if half]
            for read in pool.map(texts_of, halves):
                texts.update(read)
            found += [aid for aid in part if holds_phrases(texts, aid)]
            start += step
            step = min(2 * step, 1024)
    found = found[:limit] if limit else found
    docs: dict[str, Document] = {}
    for start in range(0, len(found), 1000):
        docs.update((d["_id"], d) for d in collection.find({"_id": {"$in": found[start:start + 1000]}}))
    return [docs[aid] for aid in found if aid in docs]


def with_search_indexes(collection: Collection[Document], filters: Filters,
                        text_index: bool | None = None) -> Filters:
    """`filters` with the word search the server allows: its text index, else a complete
    word index (pipelines.word_index), else neither (a scan). `text_index`: whether the
    server has the text index, when the caller knows already."""
    if not (filters.text or filters.phrases):
        return filters
    from pipelines.word_index import WordIndex

    if text_index is None:
        text_index = has_text_index(collection)
    return dataclasses.replace(filters, text_index=text_index,
                               word_index=not text_index and WordIndex(collection).complete())


def narrowed(collection: Collection[Document], filters: Filters, query: Document) -> Document:
    """`query` (build_query's, for phrases without words) limited to the records holding the
    phrases' words, by the word index where the filters may use it: for pages read by keyset."""
    indexed = indexed_terms(filters) if filters.phrases and filters.word_index else None
    if indexed is None or filters.text:
        return query
    from pipelines.word_index import WordIndex, article_id

    ids = [article_id(n) for n in WordIndex(collection).holders(indexed[1]).numbers]
    return {**query, "_id": {"$in": sorted(ids)}}


def find_articles(collection: Collection[Document], filters: Filters,
                  limit: int = 20) -> Iterator[Document]:
    """The articles, newest first; for words, by text score first (as `score`)."""
    if (filters.text or filters.phrases) and filters.word_index and not filters.text_index:
        indexed = indexed_terms(filters)
        if indexed is not None:
            return iter(find_indexed(collection, filters, *indexed, limit))
    query, sort = build_query(filters)
    if filters.text and filters.text_index:
        cursor = collection.find(query, {"score": {"$meta": "textScore"}}).sort(sort)
    elif filters.text:
        # No text index (FerretDB): every match, scored with MongoDB's formula, ranked here.
        terms = search.query_terms(filters.text)
        found = list(collection.find(query))
        for doc in found:
            doc["score"] = search.text_score(doc.get(search.WORDS_FIELD) or "", terms)
        found.sort(key=lambda d: (d["score"], d["published_at"], d["_id"]), reverse=True)
        return iter(found[:limit] if limit else found)
    else:
        cursor = collection.find(query).sort(sort)
    if limit:
        cursor = cursor.limit(limit)
    return iter(cursor)


# Stages of a MongoDB plan that read an index; an SQLite plan (FerretDB) says `USING … INDEX`.
MONGODB_INDEX_STAGES = frozenset({"IXSCAN", "EXPRESS_IXSCAN", "IDHACK", "EXPRESS_IDHACK", "TEXT",
                                  "TEXT_MATCH", "TEXT_OR", "COUNT_SCAN", "DISTINCT_SCAN"})
_SQLITE_INDEX = re.compile(r"\bUSING (COVERING )?INDEX\b|\bUSING (INTEGER )?PRIMARY KEY\b")


def _stages(plan: Any) -> Iterator[str]:
    if isinstance(plan, Mapping):
        if isinstance(plan.get("stage"), str):
            yield plan["stage"]
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _stages(value)


def plan_uses_index(explain: Mapping[str, Any]) -> bool | None:
    """Whether the winning plan of an `explain` reads an index; None if the format is unknown.

    MongoDB: an index stage (IXSCAN, TEXT, …) in `queryPlanner.winningPlan`.
    FerretDB 1.x (SQLite backend): `queryPlanner.Plan` is SQLite's EXPLAIN QUERY PLAN,
    whose lines say `SEARCH <table> USING INDEX <name>` when an index is used and
    `SCAN <table>` for a full scan."""
    planner = explain.get("queryPlanner")
    if not isinstance(planner, Mapping):
        return None
    if "winningPlan" in planner:
        return any(stage in MONGODB_INDEX_STAGES for stage in _stages(planner["winningPlan"]))
    if isinstance(planner.get("Plan"), list):
        return any(_SQLITE_INDEX.search(str(line)) for line in planner["Plan"])
    return None


def explain_query(collection: Collection[Document], filters: Filters, limit: int = 20) -> Document:
    """The server's plan. Through the word index: the plan of the read of the records (by
    `_id`), with those of the reads of the index (`wordIndex`: its segments, its postings)."""
    indexed = indexed_terms(filters) if filters.word_index and not filters.text_index else None
    if indexed is not None and (filters.text or filters.phrases):
        from pipelines.word_index import WordIndex, article_id

        index = WordIndex(collection)
        terms = indexed[0] or sorted(indexed[1][0][0])
        segments = index.live()
        found = (index.candidates(terms) if indexed[0] else index.holders(indexed[1])).numbers
        ids = [article_id(n) for n in found[:1000]]
        others, sort = build_query(dataclasses.replace(filters, text=None, phrases=()))
        plan = dict(collection.find({**others, "_id": {"$in": ids}}).sort(sort).explain())
        plan["wordIndex"] = {
            "segments": dict(index.segment_cursor().explain()),
            "postings": dict(index.collection.find(
                {"_id": {"$in": sorted({s.bucket_id(terms[0]) for s in segments})}}).explain()),
        }
        return plan
    query, sort = build_query(filters)
    cursor = collection.find(query).sort(sort)
    if limit:
        cursor = cursor.limit(limit)
    return dict(cursor.explain())


# --- output ----------------------------------------------------------------------------------

def iso_z(moment: datetime) -> str:
    """ISO-8601 in UTC with `Z`; milliseconds only when there are some."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # ObjectId, Decimal128, …


def json_line(document: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(document), ensure_ascii=False)


def article_url(document: Mapping[str, Any]) -> str:
    urls = document.get("urls") or []
    return str(urls[0] if urls else document.get("share_url") or document.get("body_url") or "")


def csv_lines(documents: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The header, then one row per article; categories joined by `;`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def row(values: Sequence[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield row(CSV_COLUMNS)
    for doc in documents:
        published = doc.get("published_at")
        yield row([doc.get("_id", ""), iso_z(published) if isinstance(published, datetime) else "",
                   doc.get("source", ""), doc.get("title", ""),
                   ";".join(doc.get("categories") or []), article_url(doc)])


def display_width(text: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else
               0 if unicodedata.combining(ch) else 1 for ch in text)


def truncate(text: str, width: int) -> str:
    """`text` cut to `width` columns, with `…` when cut."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = display_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…" if width >= 1 else ""


def pad(text: str, width: int, align: str = "<") -> str:
    gap = " " * max(width - display_width(text), 0)
    return gap + text if align == ">" else text + gap


def render_table(headers: Sequence[str], aligns: Sequence[str], rows: Sequence[Sequence[str]],
                 sep: str = "  ") -> list[str]:
    """Aligned columns (by display width); the last column is not padded on the right."""
    widths = [max([display_width(h)] + [display_width(r[i]) for r in rows])
              for i, h in enumerate(headers)]
    lines = []
    for cells in [list(headers), *rows]:
        parts = [pad(c, widths[i], aligns[i]) for i, c in enumerate(cells)]
        if aligns[-1] == "<":
            parts[-1] = cells[-1]
        lines.append(sep.join(parts).rstrip())
    return lines


def article_table(documents: Iterable[Mapping[str, Any]], columns: int) -> list[str]:
    """id, published (Asia/Shanghai), source, title cut to fit `columns`."""
    rows: list[list[str]] = []
    titles: list[str] = []
    for doc in documents:
        published = doc.get("published_at")
        rows.append([str(doc.get("_id", "")),
                     published.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
                     if isinstance(published, datetime) else "-",
                     str(doc.get("source") or "-")])
        titles.append(str(doc.get("title") or ""))
    headers = ["id", "published (+08)", "source"]
    widths = [max([display_width(h)] + [display_width(r[i]) for r in rows]) for i, h in
              enumerate(headers)]
    room = max(columns - sum(widths) - 2 * len(widths), 10)
    full = [[*row, truncate(title, room)] for row, title in zip(rows, titles, strict=True)]
    return render_table([*headers, "title"], ["<", "<", "<", "<"], full)


# --- the command --------------------------------------------------------------------------------

def cmd_query(args: argparse.Namespace) -> int:
    import shutil

    from newscrawl.ops import query
    from pipelines.sources import SourceRegistry

    slug = None
    if args.source:
        extra = os.environ.get("NEWSCRAWL_SOURCES_FILE")
        try:
            registry = SourceRegistry.load(*([extra] if extra else []))
        except (OSError, ValueError) as exc:
            raise UsageError(f"source registry (NEWSCRAWL_SOURCES_FILE): {exc}") from None
        slug = query.source_slug(args.source, registry)
    filters = query.Filters(source_slug=slug, category=args.category, since=args.since,
                            until=args.until, text=" ".join(args.text) if args.text else None,
                            phrases=tuple(args.phrase or ()))
    query.validate(filters)
    client, config = connect(args.database)
    try:
        articles = client[config.database][config.collection]
        filters = query.with_search_indexes(articles, filters)
        if filters.text and not (filters.text_index or filters.word_index):
            print("newscrawl: note: the server has no text index on words (FerretDB cannot "
                  "have one) and the word index does not cover this collection yet: --text "
                  "scans with a regex per word and ranks here; `newscrawl index-words` builds it",
                  file=sys.stderr)
        if args.explain:
            explain = query.explain_query(articles, filters, limit=args.limit)
            print(query.json_line(explain))
            uses = query.plan_uses_index(explain)
            print("newscrawl: the plan " + {True: "uses an index", False: "reads no index (a full "
                  "scan)", None: "is in a format newscrawl does not know"}[uses], file=sys.stderr)
            return 0
        documents = query.find_articles(articles, filters, limit=args.limit)
        if args.format == "jsonl":
            print_lines(query.json_line(doc) for doc in documents)
        elif args.format == "csv":
            print_lines(query.csv_lines(documents))
        else:
            columns = shutil.get_terminal_size(fallback=(120, 24)).columns
            print_lines(query.article_table(documents, columns))
    finally:
        client.close()
    return 0


def add_command(sub: Any) -> None:
    from newscrawl.ops.query import since_bound, until_bound

    query = sub.add_parser(
        "query", help="print stored articles by source, category, dates or text",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stored articles (MONGO_COLLECTION of MONGO_DATABASE), newest first "
                    "(with --text: best text score first). "
                    "Filters combine (all must match).",
        epilog="dates: YYYY-MM-DD is a day in Asia/Shanghai (the site's zone); an ISO datetime "
               "without offset is Shanghai time too.\n"
               "examples:\n"
               "  newscrawl query --source 荆州日报 --since 2021-12-31\n"
               "  newscrawl query --category emnews --limit 100 --format csv > emnews.csv\n"
               "  newscrawl query --text 制冷剂 --since 2021-12-30T08:00 --format jsonl\n"
               "  newscrawl query --text 净利润 降准 --phrase 同比增长")
    query.add_argument("--source", metavar="NAME",
                       help="a medium: canonical name, alias or slug (荆州日报, jingzhouribao)")
    query.add_argument("--category", metavar="SLUG", help="a category slug (emnews, jingzhouribao)")
    query.add_argument("--since", type=time_option(since_bound), metavar="WHEN",
                       help="published on or after this day (00:00 Shanghai) or moment")
    query.add_argument("--until", type=time_option(until_bound), metavar="WHEN",
                       help="published on or before this day (through 24:00 Shanghai) or moment")
    query.add_argument("--text", metavar="WORD", nargs="+",
                       help="words the title and text must all hold (segmented as the stored "
                            "`words` are: 央行降准 is 央行 and 降准), best text score first")
    query.add_argument("--phrase", metavar="TEXT", action="append",
                       help="an exact phrase of the text (punctuation included); repeat for "
                            "more. A scan: combine it with --text or other filters")
    query.add_argument("--limit", type=count_option, default=20, metavar="N",
                       help="at most N articles (default 20; 0: all)")
    query.add_argument("--format", choices=["table", "jsonl", "csv"], default="table",
                       help="table (default): id, published, source, title; jsonl: whole "
                            "documents, dates as ISO-8601 UTC; csv: "
                            "_id,published_at,source,title,categories,url")
    query.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    query.add_argument("--explain", action="store_true",
                       help="print the server's plan for the query (JSON) instead of the articles, "
                            "and say on stderr whether it uses an index")
    query.set_defaults(func=cmd_query)
