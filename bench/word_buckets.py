"""The word index's buckets: bytes a posting, and the CPU a segment costs (issue 22).

    .local/venv/bin/python bench/word_buckets.py [--records 200 2000] [--merge 16] [--repeat 3]

FerretDB charges by the byte for what it reads, writes and deletes, and the store
packs a segment in its own process on every write: this measures both for the
bucket format of `pipelines.word_index`, on the scaling bench's synthetic records
(`bench.scaling.Articles`: the mirror's shape, words of their own). For a segment of
each `--records` size, as the store writes one (`Postings.add`, `pack_buckets` with
`bucket_count`'s buckets): µs a record to add and to pack, and the compressed bytes
a posting. Then a merge of `--merge` segments of the first size, as
`WordIndex._merge` does it (every bucket decoded whole, `Postings.extend`, packed
again): µs a posting to decode and to pack, and the merged segment's bytes a posting.
No database.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any


def records_of(size: int, start: int = 0) -> list[tuple[str, str, Any]]:
    from bench.scaling import Articles
    from pipelines.search import search_words

    articles = Articles(start + size)
    items = (articles.item(n) for n in range(start, start + size))
    return [(item["article_id"], search_words(item["title"], "\n".join(item["paragraphs"])),
             item["published_at"]) for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[200, 2000], help="records a segment")
    parser.add_argument("--merge", type=int, default=16, help="segments of the first size merged")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from pipelines import word_index as wi

    def segment(records: list[tuple[str, str, Any]]) -> tuple[wi.Postings, dict[int, bytes], float, float]:
        started = time.perf_counter()
        postings = wi.Postings()
        for record in records:
            postings.add(*record)
        added = time.perf_counter()
        packed = wi.pack_buckets(postings, wi.bucket_count(postings.count))
        return postings, packed, added - started, time.perf_counter() - added

    for size in args.records:
        records = records_of(size)
        runs = [segment(records) for _ in range(args.repeat)]
        postings, packed = runs[0][0], runs[0][1]
        add = statistics.median(run[2] for run in runs) / size * 1e6
        pack = statistics.median(run[3] for run in runs) / size * 1e6
        print(f"segment of {size:,} records: {postings.count:,} postings in {len(packed)} buckets, "
              f"{sum(map(len, packed.values())) / postings.count:.2f} bytes a posting; "
              f"add {add:.0f} µs a record, pack {pack:.0f} µs a record")

    size = args.records[0]
    parts = [segment(records_of(size, n * size))[1] for n in range(args.merge)]
    decode_times, pack_times = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        merged = wi.Postings()
        for packed in parts:
            for data in packed.values():
                merged.extend(*wi.Bucket(data).everything())
        decoded = time.perf_counter()
        out = wi.pack_buckets(merged, wi.bucket_count(merged.count))
        decode_times.append(decoded - started)
        pack_times.append(time.perf_counter() - decoded)
    count = merged.count
    print(f"merge of {args.merge} segments of {size:,} records: {count:,} postings in {len(out)} buckets, "
          f"{sum(map(len, out.values())) / count:.2f} bytes a posting; decode "
          f"{statistics.median(decode_times) / count * 1e6:.2f} µs a posting, pack "
          f"{statistics.median(pack_times) / count * 1e6:.2f} µs a posting")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
