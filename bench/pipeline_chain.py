"""The four step pipelines alone, on the raw items a mirror crawl yields: items per second.

    .local/venv/bin/python bench/pipeline_chain.py [--articles 10000] [--repeat 5] [--json PATH]

CleanPipeline -> IdentityPipeline -> DatePipeline -> SourcePipeline, built with
scrapy.utils.test.get_crawler as the tests do, in this one process on one
core (single-threaded; `--pin CPU` also pins it to that CPU). The
items are every post page of a generated mirror through
newscrawl.spiders.base.post_item, share JSON merged in as the spider does; they
are built (and copied for each repeat) before the clock starts. Target: >= 2,000 items/s
(issue 6); with `--words`, >= 5,000 items/s (issue 14: the chain with segmentation on).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bench.common import figures, machine, show, show_machine, write_json
from bench.mirror import mirror_dir, raw_items

TARGET = 2_000.0
TARGET_WITH_WORDS = 5_000.0  # issue 14


def fresh(items: Sequence[Any]) -> list[Any]:
    """Copies the chain may fill in (the fields it mutates in place are copied too)."""
    return [replace(item, extra=dict(item.extra), tags=list(item.tags)) for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=10_000, help="mirror size (generated articles)")
    parser.add_argument("--limit", type=int, help="use only the first N post pages")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pin", type=int, metavar="CPU", help="pin the process to this CPU")
    parser.add_argument("--words", action="store_true",
                        help="also segment each item's title and text (pipelines.search.search_words) "
                             "as a fifth step: what segmentation would cost in the chain (the store "
                             "does it in its writer thread instead)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from scrapy.utils.test import get_crawler

    from pipelines.errors import RejectItem
    from pipelines.steps import (
        STEP_PIPELINES,
        CleanPipeline,
        DatePipeline,
        IdentityPipeline,
        SourcePipeline,
    )

    pinned: int | None = args.pin
    if pinned is not None:
        os.sched_setaffinity(0, {pinned})
    facts = machine()
    facts["pinned_cpu"] = pinned
    print(show_machine(facts) + (f"; pinned to CPU {pinned}" if pinned is not None else ""))
    out = mirror_dir(args.articles)
    started = time.perf_counter()
    items = raw_items(out, args.limit)
    print(f"{len(items)} raw items from the post pages of {out} "
          f"(built in {time.perf_counter() - started:.1f} s, not timed)")
    kinds = Counter(("share text" if item.share_html else "no share text") for item in items)
    print("items: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))

    crawler = get_crawler(settings_dict={"ITEM_PIPELINES": STEP_PIPELINES})
    steps = [CleanPipeline.from_crawler(crawler), IdentityPipeline.from_crawler(crawler),
             DatePipeline.from_crawler(crawler), SourcePipeline.from_crawler(crawler)]
    if args.words:
        from itemadapter import ItemAdapter

        from pipelines.search import search_words

        class WordsStep:
            def process_item(self, item: Any) -> Any:
                adapter = ItemAdapter(item)
                adapter.setdefault("extra", {})["words"] = search_words(
                    adapter.get("title"), "\n".join(adapter.get("paragraphs") or ()))
                return item

        steps.append(WordsStep())  # type: ignore[arg-type]
    names = [type(step).__name__ for step in steps]

    def run(batch: list[Any]) -> tuple[float, float, list[float], int]:
        """Wall and CPU seconds for the batch, seconds per step, rejects."""
        per_step = [0.0] * len(steps)
        rejected = 0
        clock = time.perf_counter
        wall0, cpu0 = clock(), time.process_time()
        for item in batch:
            for index, step in enumerate(steps):
                t0 = clock()
                try:
                    step.process_item(item)
                except RejectItem:
                    per_step[index] += clock() - t0
                    rejected += 1
                    break
                per_step[index] += clock() - t0
        return clock() - wall0, time.process_time() - cpu0, per_step, rejected

    run(fresh(items[:500]))  # warm-up: lazy imports (dateparser), regex caches, the registry
    rates: list[float] = []
    cpu_rates: list[float] = []
    step_us: dict[str, list[float]] = {name: [] for name in names}
    rejected = 0
    for repeat in range(1, args.repeat + 1):
        batch = fresh(items)
        wall, cpu, per_step, rejected = run(batch)
        rates.append(len(batch) / wall)
        cpu_rates.append(len(batch) / cpu)
        for name, seconds in zip(names, per_step, strict=True):
            step_us[name].append(1e6 * seconds / len(batch))
        print(f"[{repeat}/{args.repeat}] {len(batch)} items in {wall:.2f} s (CPU {cpu:.2f} s): "
              f"{len(batch) / wall:.0f} items/s; {rejected} rejected", flush=True)

    fig = figures(rates)
    target = TARGET_WITH_WORDS if args.words else TARGET
    met = fig["median"] >= target
    print("\n== pipeline chain" + (" with segmentation (--words) ==" if args.words else " =="))
    print(f"items/s (wall)  {show(fig, digits=0)} -> target >= {target:.0f}: {'MET' if met else 'MISSED'}")
    print(f"items/s (CPU)   {show(figures(cpu_rates), digits=0)}")
    print("per step, microseconds per item (median):")
    step_figs = {name: figures(values) for name, values in step_us.items()}
    for name, step_fig in step_figs.items():
        print(f"  {name:18s} {show(step_fig, 'µs', 1)}")
    write_json(args.json, {
        "bench": "pipeline_chain", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts, "items": len(items), "item_kinds": dict(kinds), "rejected": rejected,
        "items_per_second": fig, "items_per_cpu_second": figures(cpu_rates),
        "step_microseconds_per_item": step_figs, "target": target, "target_met": met,
        "words_step": args.words,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
