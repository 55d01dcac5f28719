"""Near-duplicate links against the mirror's ground truth: precision, recall, cost, memory.

    .local/venv/bin/python bench/neardup.py [--articles 10000] [--json PATH] [--index-records 100000]

1. Builds (cached) a mirror with reprints (`fixtures.reprints`: reprints with
   known edits, unrelated articles sharing boilerplate or a long quote), then
   writes its ground-truth articles through `ArticleStore.write` in batches of
   200 into a fresh database (MONGO_URI, else the local FerretDB), as a crawl's
   writer would, and scores the stored `near_duplicate_of` links against the
   truth's stories: precision = links to a record of the same story / links;
   recall = records that are not the first of their story and link to a record
   of it / such records. Exact copies (the mirror's `duplicate_of` pairs) are
   stories of two.
2. The same scores offline for a sweep of thresholds (same candidates, same
   exact similarity, one batch), and the candidate counts.
3. The memory of the in-memory band index (FerretDB's) at `--index-records`
   records: numpy arrays plus the Python objects (tracemalloc).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bench.common import WORK_DIR, bench_parser, machine, show_machine, write_json
from bench.database import database_name, database_uri, drop_database

SEED = 20211231
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
NUMBERS_KEPT = (0.0, 0.5, 0.6, 0.7, 0.8, 1.0)


def reprint_mirror(articles: int) -> Path:
    from fixtures.generate import build_mirror

    out = WORK_DIR / "mirror" / f"{articles}-{SEED}-reprints"
    if not (out / "truth" / "manifest.json").exists():
        print(f"building a mirror of {articles} articles with reprints in {out} ...", flush=True)
        build_mirror(out, articles=articles, seed=SEED, reprints=True)
    return out


def load_truth(out: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The truth's articles and the story of each (its id, unless it is a reprint or copy)."""
    records = [json.loads(line) for line in
               (out / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines() if line]
    story = {r["_id"]: r["_id"] for r in records}
    reprints_file = out / "truth" / "reprints.json"
    if reprints_file.exists():
        for group in json.loads(reprints_file.read_text(encoding="utf-8"))["stories"]:
            for aid in group["ids"]:
                if aid in story:
                    story[aid] = group["ids"][0]
    for r in records:  # exact copies: the same story
        if r.get("duplicate_of"):
            story[r["_id"]] = story.get(r["duplicate_of"], r["duplicate_of"])
    return records, story


def scores(links: Mapping[str, str | None], story: Mapping[str, str],
           published: Mapping[str, datetime]) -> dict[str, Any]:
    members: dict[str, list[str]] = defaultdict(list)
    for aid, s in story.items():
        members[s].append(aid)
    should = {aid for group in members.values() if len(group) > 1
              for aid in sorted(group, key=lambda a: (published[a], a))[1:]}
    made = {aid: target for aid, target in links.items() if target}
    right = {aid for aid, target in made.items() if story.get(aid) == story.get(target)}
    wrong = sorted(set(made) - right)
    return {"links": len(made), "correct": len(right), "should_link": len(should),
            "precision": len(right) / len(made) if made else 1.0,
            "recall": len(right & should) / len(should) if should else 1.0,
            "wrong": [(aid, made[aid]) for aid in wrong[:10]]}


def sighting_of(record: Mapping[str, Any], seen: datetime) -> dict[str, Any]:
    published = datetime.strptime(record["published_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return {**{k: record[k] for k in ("_id", "info_code", "title", "paragraphs", "text", "body_kind",
                                       "published_at_raw", "source", "source_slug", "categories",
                                       "tags", "urls", "share_url", "origin_url", "content_hash")},
            "page_kind": "post", "body_url": record["urls"][0] if record["urls"] else "x",
            "published_at": published, "source_from": "attribution", "share_pending": None,
            "seen_at": seen}


def offline(records: list[dict[str, Any]], story: Mapping[str, str],
            published: Mapping[str, datetime]) -> dict[str, Any]:
    from pipelines import neardup

    started = time.perf_counter()
    texts = {r["_id"]: r["text"] for r in records}
    sigs = {aid: neardup.signature(neardup.shingles(t)) for aid, t in texts.items()}
    keys = {aid: neardup.band_keys_of(sig) for aid, sig in sigs.items()}
    signing = time.perf_counter() - started
    buckets: dict[int, list[str]] = defaultdict(list)
    for aid, ks in keys.items():
        for k in ks:
            buckets[k].append(aid)
    pairs: set[tuple[str, str]] = set()
    for group in buckets.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                pairs.add((min(a, b), max(a, b)))
    checked = [(a, b) for a, b in pairs
               if neardup.estimate(sigs[a], sigs[b]) >= neardup.THRESHOLD - neardup.ESTIMATE_MARGIN]
    shingle_sets = {aid: neardup.shingles(t) for aid, t in texts.items()}
    sims = {(a, b): (neardup.jaccard(shingle_sets[a], shingle_sets[b]),
                     neardup.numbers_kept(texts[a], texts[b])) for a, b in checked}
    sweep = {}
    for kept in NUMBERS_KEPT:
        for threshold in THRESHOLDS:
            similar: dict[str, dict[str, tuple[tuple[datetime, str], float]]] = defaultdict(dict)
            for (a, b), (sim, figures_kept) in sims.items():
                if sim >= threshold and figures_kept >= kept:
                    similar[a][b] = ((published[b], b), sim)
                    similar[b][a] = ((published[a], a), sim)
            links = {}
            for aid in texts:
                best = neardup.earliest_link((published[aid], aid), similar.get(aid, {}))
                links[aid] = best.target if best else None
            sweep[f"{threshold}/{kept}"] = scores(links, story, published)
    return {"candidate_pairs": len(pairs), "exactly_checked": len(checked),
            "signing_us_per_article": 1e6 * signing / len(texts), "sweep": sweep}


def signing_speed(records: list[dict[str, Any]]) -> dict[str, float]:
    """µs per article: shingles alone, rensa's signature (used), datasketch's (when installed)."""
    from pipelines import neardup

    texts = [r["text"] for r in records[:3000]]
    sets = [neardup.shingles(t) for t in texts]
    out: dict[str, float] = {}
    started = time.perf_counter()
    for text in texts:
        neardup.shingles(text)
    out["shingles_us"] = 1e6 * (time.perf_counter() - started) / len(texts)
    started = time.perf_counter()
    for shingle_set in sets:
        neardup.signature(shingle_set)
    out["rensa_us"] = 1e6 * (time.perf_counter() - started) / len(texts)
    try:
        from datasketch import MinHash
    except ImportError:
        return out
    permutations = MinHash(num_perm=neardup.NUM_PERM, seed=1).permutations
    started = time.perf_counter()
    for shingle_set in sets:
        minhash = MinHash(num_perm=neardup.NUM_PERM, seed=1, permutations=permutations,
                          scheme="affine32")
        minhash.update_batch([s.encode("utf-8") for s in shingle_set])
    out["datasketch_us"] = 1e6 * (time.perf_counter() - started) / len(texts)
    return out


def index_memory(records: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """The band index holding `count` records (the mirror's texts, cycled, under new ids), as
    `BandIndex.load` fills it at the first write, then 1,000 more as writes add them."""
    from pipelines import neardup

    sigs = [neardup.signature(neardup.shingles(r["text"])) for r in records[:2000]]
    bands = [neardup.band_keys_of(sig) for sig in sigs]
    when = datetime(2021, 12, 31, tzinfo=UTC)
    tracemalloc.start()
    index = neardup.BandIndex()
    for n in range(count):
        index.put(neardup.Candidate((when, f"2021123100{n:08d}"), sigs[n % len(sigs)], n, None),
                  [k ^ n for k in bands[n % len(bands)]], recent=n >= count - 1000)
        if n == count - 1001:
            index._resort()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"records": count, "traced_mb": current / 1e6, "peak_mb": peak / 1e6,
            "numpy_mb": index.nbytes() / 1e6, "bytes_per_record": current / count}


def store_write_seconds(uri: str, records: list[dict[str, Any]], batch: int, *,
                        features: bool) -> float:
    """Seconds to write `records` in batches into a fresh database (closing included)."""
    from unittest import mock

    from pipelines import neardup, search
    from pipelines.storage import ArticleStore, ensure_indexes

    name = database_name("neardup_baseline")
    store = ArticleStore.connect(uri, name)
    seen = datetime.now(UTC)
    off = [] if features else [mock.patch.object(neardup, "annotate", return_value=False),
                               mock.patch.object(search, "annotate", return_value=False)]
    try:
        for patch in off:
            patch.start()
        ensure_indexes(store.db, "articles", "rejects")
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            store.write([sighting_of(r, seen) for r in records[start:start + batch]])
        store.close()
        return time.perf_counter() - started
    finally:
        for patch in off:
            patch.stop()
        drop_database(uri, name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=10_000, repeat=None)
    parser.add_argument("--index-records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--baseline", action="store_true",
                        help="first write the same records with `words` and near-duplicates "
                             "switched off in this process (their annotate functions made no-ops)")
    args = parser.parse_args(argv)

    from pipelines import neardup
    from pipelines.storage import ArticleStore, ensure_indexes

    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    out = reprint_mirror(args.articles)
    records, story = load_truth(out)
    published = {r["_id"]: datetime.strptime(r["published_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                 for r in records}
    sizes = Counter(story.values())
    groups = sum(1 for n in sizes.values() if n > 1)
    print(f"{len(records)} truth articles of {out}; parameters: K={neardup.K}, "
          f"{neardup.NUM_PERM} permutations, {neardup.BANDS} bands x {neardup.ROWS} rows, "
          f"threshold {neardup.THRESHOLD}, figures kept >= {neardup.NUMBERS_KEPT}; "
          f"{groups} stories of 2+ records ({sum(n for n in sizes.values() if n > 1)} records)")

    baseline = None
    if args.baseline:
        baseline = store_write_seconds(uri, records, args.batch, features=False)
        print(f"\n== baseline: the same writes without words and near-duplicates ==\n"
              f"written in {baseline:.1f} s ({len(records) / baseline:.0f} articles/s)")

    name = database_name("neardup")
    store = ArticleStore.connect(uri, name)
    try:
        ensure_indexes(store.db, "articles", "rejects")
        seen = datetime.now(UTC)
        started = time.perf_counter()
        linked = 0
        for start in range(0, len(records), args.batch):
            report = store.write([sighting_of(r, seen) for r in records[start:start + args.batch]])
            linked += report.near_duplicates_linked
        written = time.perf_counter() - started
        store.close()
        closed = time.perf_counter() - started
        store = ArticleStore.connect(uri, name)
        links = {doc["_id"]: (doc.get("near_duplicate_of") or {}).get("_id")
                 for doc in store.articles.find({}, {"near_duplicate_of": 1})}
        stored = scores(links, story, published)
    finally:
        store.close()
        drop_database(uri, name)
    print(f"\n== through ArticleStore.write, batches of {args.batch} ==")
    print(f"written in {written:.1f} s ({len(records) / written:.0f} articles/s), closed at "
          f"{closed:.1f} s; {linked} link writes")
    print(f"links {stored['links']}, correct {stored['correct']}, should link {stored['should_link']}: "
          f"precision {stored['precision']:.4f}, recall {stored['recall']:.4f}")
    for aid, target in stored["wrong"]:
        print(f"  wrong: {aid} -> {target}")

    print("\n== offline, every threshold (same candidates and similarity) ==")
    off = offline(records, story, published)
    print(f"signature + band keys: {off['signing_us_per_article']:.0f} µs/article; candidate pairs "
          f"{off['candidate_pairs']}, checked exactly {off['exactly_checked']}")
    print("threshold/figures kept  links  precision  recall")
    for setting, fig in off["sweep"].items():
        print(f"{setting:>22s}  {fig['links']:5d}  {fig['precision']:9.4f}  {fig['recall']:6.4f}")

    speed = signing_speed(records)
    print("signatures, µs/article (3,000 texts): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in speed.items()))

    print(f"\n== the in-memory band index (FerretDB) at {args.index_records} records ==")
    memory = index_memory(records, args.index_records)
    print(f"{memory['traced_mb']:.1f} MB traced ({memory['bytes_per_record']:.0f} bytes a record; "
          f"numpy arrays {memory['numpy_mb']:.1f} MB), peak {memory['peak_mb']:.1f} MB")
    write_json(args.json, {
        "bench": "neardup", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts, "articles": len(records), "stories_with_copies": groups,
        "parameters": {"K": neardup.K, "num_perm": neardup.NUM_PERM, "bands": neardup.BANDS,
                       "threshold": neardup.THRESHOLD, "numbers_kept": neardup.NUMBERS_KEPT},
        "stored": stored, "write_seconds": written, "baseline_write_seconds": baseline,
        "offline": off, "index_memory": memory,
        "signing": speed,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
