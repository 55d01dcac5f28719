"""pipelines.storage.ArticleStore.write in batches against one write per item: documents/s.

    .local/venv/bin/python bench/storage.py [--records 1000] [--prefill 0 5000] [--repeat 3]
        [--single-limit 1000 100] [--json PATH]

The records are what a crawl of the mirror writes: its post pages' raw items
through the four step pipelines and `sighting_from_item`, one sighting per
article (the first), so every mode writes the same new documents:

- `write/50`, `write/200`, `write/1000`: ArticleStore.write of batches of that size
  (the crawl's MONGO_BATCH_SIZE is 200);
- `write/1`: ArticleStore.write([one]) per record;
- `insert_one`: a raw insert_one of the record `write` would store (new_record), per record;
- `insert_many/16`: raw insert_many in commands of 16, what write sends on FerretDB
  without its reads (the floor of the batched path);
- `seen_again/200`: the records are stored first (untimed), then a second
  sighting of each (another category's post page an hour later: a new URL and
  category, same text) goes through ArticleStore.write in batches of 200, as
  an article listed in two categories does in a crawl: the read-merge-replace path.

Each mode runs in a fresh database (indexes as the pipeline creates them),
optionally prefilled with `--prefill` other records of the same mirror first
(untimed), since every query of the write path costs more as the collection
grows. The per-record modes (`write/1`, `insert_one`) write only the first
`--single-limit` records (one value per prefill size) to keep the run short.
Database time per command kind comes from a pymongo CommandListener.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import bench_parser, figures, machine, show, show_machine, write_json
from bench.crawl_probe import Timings
from bench.database import database_name, database_uri
from bench.mirror import mirror_dir, raw_items

MODES = ("write/50", "write/200", "write/1000", "write/1", "insert_one", "insert_many/16", "seen_again/200")
SINGLE_MODES = ("write/1", "insert_one")


def sightings_of(items: Sequence[Any]) -> list[dict[str, Any]]:
    """The first sighting of every article the chain accepts, in crawl order."""
    from itemadapter import ItemAdapter
    from scrapy.utils.test import get_crawler

    from pipelines.errors import RejectItem
    from pipelines.records import sighting_from_item
    from pipelines.steps import CleanPipeline, DatePipeline, IdentityPipeline, SourcePipeline

    crawler = get_crawler()
    steps = [CleanPipeline.from_crawler(crawler), IdentityPipeline.from_crawler(crawler),
             DatePipeline.from_crawler(crawler), SourcePipeline.from_crawler(crawler)]
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for item in items:
        try:
            for step in steps:
                step.process_item(item)
        except RejectItem:
            continue
        sighting = sighting_from_item(ItemAdapter(item))
        if sighting["_id"] not in seen:
            seen.add(sighting["_id"])
            out.append(sighting)
    return out


def seen_again(sighting: dict[str, Any]) -> dict[str, Any]:
    """The same article on another category's post page, an hour later."""
    urls = [url.replace("finews.withounder.com/", "finews.withounder.com/again/", 1)
            for url in sighting["urls"]]
    return {**sighting, "urls": urls, "categories": ["again"] if urls else [],
            "seen_at": sighting["seen_at"] + timedelta(hours=1)}


def run_mode(mode: str, uri: str, records: list[dict[str, Any]], prefill: list[dict[str, Any]],
             ) -> tuple[float, list[dict[str, Any]], int]:
    """Seconds to write `records` in `mode`, database commands timed, documents stored."""
    from pipelines.config import mongo_client
    from pipelines.records import new_record
    from pipelines.storage import MAX_FERRETDB_OPS, ArticleStore, ensure_indexes

    database = database_name("storage")
    timings = Timings()
    client = mongo_client(uri, appname="newscrawl-bench", socket_timeout_ms=600_000,
                          event_listeners=[timings])
    try:
        store = ArticleStore(client[database])
        ensure_indexes(store.db, "articles", "rejects")
        now = datetime.now(UTC)
        fill = [new_record(s, now) for s in prefill]
        for start in range(0, len(fill), MAX_FERRETDB_OPS):
            store.articles.insert_many(fill[start:start + MAX_FERRETDB_OPS])
        store.capabilities  # noqa: B018 - asks buildInfo once, before the clock
        write: Callable[[], None]
        if mode.startswith("seen_again/"):
            size = int(mode.split("/")[1])
            for start in range(0, len(records), size):
                store.write(records[start:start + size])
            again = [seen_again(s) for s in records]

            def write() -> None:
                for start in range(0, len(again), size):
                    store.write(again[start:start + size])
        elif mode.startswith("write/"):
            size = int(mode.split("/")[1])

            def write() -> None:
                for start in range(0, len(records), size):
                    store.write(records[start:start + size])
        elif mode == "insert_one":
            docs = [new_record(s, now) for s in records]

            def write() -> None:
                for doc in docs:
                    store.articles.insert_one(doc)
        else:
            docs = [new_record(s, now) for s in records]

            def write() -> None:
                for start in range(0, len(docs), MAX_FERRETDB_OPS):
                    store.articles.insert_many(docs[start:start + MAX_FERRETDB_OPS])
        timings.totals.clear()
        started = time.perf_counter()
        write()
        seconds = time.perf_counter() - started
        commands: list[dict[str, Any]] = [
            {"command": key, "count": int(n), "statements": int(statements), "seconds": round(total, 4)}
            for key, (n, statements, total, _) in list(timings.totals.items())]
        stored = store.articles.count_documents({}) - len(fill)
        commands.sort(key=lambda row: -row["seconds"])
        return seconds, commands, stored
    finally:
        client.drop_database(database)
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=10_000, repeat=3)
    parser.add_argument("--records", type=int, default=1000, help="records each batched mode writes")
    parser.add_argument("--prefill", type=int, nargs="+", default=[0, 5000],
                        help="documents already stored before the timed writes")
    parser.add_argument("--single-limit", type=int, nargs="+", default=[1000, 100],
                        help="records the per-record modes write, one value per --prefill size")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)
    if len(args.single_limit) < len(args.prefill):
        args.single_limit += args.single_limit[-1:] * (len(args.prefill) - len(args.single_limit))

    logging.getLogger("pipelines.capabilities").setLevel(logging.ERROR)  # the server's gaps, once a run
    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    out = mirror_dir(args.articles)
    started = time.perf_counter()
    sightings = sightings_of(raw_items(out))
    needed = args.records + max(args.prefill)
    if len(sightings) < needed:
        parser.error(f"the mirror has {len(sightings)} articles; --records + --prefill needs {needed}")
    print(f"{len(sightings)} records from {out} (built in {time.perf_counter() - started:.1f} s, not timed);"
          f" {args.records} written per mode, prefill taken from the others")
    records = sightings[:args.records]
    spare = sightings[args.records:]

    results: list[dict[str, Any]] = []
    for prefill_size, single_limit in zip(args.prefill, args.single_limit, strict=False):
        prefill = spare[:prefill_size]
        print(f"\n== prefilled with {prefill_size} documents ==", flush=True)
        rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
        commands: dict[str, list[dict[str, Any]]] = {}
        counts: dict[str, int] = {}
        for repeat in range(1, args.repeat + 1):
            for mode in args.modes:
                batch = records[:single_limit] if mode in SINGLE_MODES else records
                seconds, timed, stored = run_mode(mode, uri, batch, prefill)
                rates[mode].append(len(batch) / seconds)
                commands[mode], counts[mode] = timed, len(batch)
                if stored != len(batch):
                    print(f"PROBLEM: {mode} stored {stored} of {len(batch)} documents")
                print(f"[{repeat}/{args.repeat}] {mode:15s} {len(batch):5d} docs in {seconds:8.2f} s "
                      f"-> {len(batch) / seconds:9.1f} docs/s", flush=True)
        print(f"-- prefill {prefill_size}: documents/s, median (spread) --")
        for mode in args.modes:
            fig = figures(rates[mode])
            top = ", ".join(f"{row['command']} {row['seconds']:.2f} s/{row['count']}"
                            for row in commands[mode][:3])
            print(f"  {mode:15s} {show(fig, 'docs/s')}  [{counts[mode]} docs; last run's database "
                  f"time: {top}]")
            results.append({"prefill": prefill_size, "mode": mode, "documents": counts[mode],
                            "docs_per_second": fig, "commands_last_run": commands[mode]})
    write_json(args.json, {
        "bench": "storage", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts, "records": args.records, "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
