"""How often the word index would miss a record holding a phrase (issue 22).

    .local/venv/bin/python bench/phrase_words.py [--articles 2250] [--per-article 4] [--seed 3]

`newscrawl query --phrase` finds its candidates in the word index: the records
holding every word of one of the sets `pipelines.search.phrase_word_sets` gives
(the phrase's words as each context segments them), narrowed by the conditions of
`phrase_edge_conditions` (the words an edge's contexts make across it) when there
are many. A record holding the phrase but failing either would be missed.
Over the mirror generator's articles (its ground truth, built as the scaling bench
builds it), this draws phrases from each text two ways, 2 to 4 consecutive words of
jieba's precise cut (a phrase a person would type) and a random span of 2 to 12
characters (a phrase cut anywhere), and counts those whose text holds none of the
sets. No database: segmentation only.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import random
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2250, help="mirror size (its ground truth)")
    parser.add_argument("--per-article", type=int, default=4, help="phrases of each kind per text")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    import rjieba

    from bench.scaling import mirror_dir
    from pipelines.search import phrase_edge_conditions, phrase_word_sets, search_words

    rng = random.Random(args.seed)
    truth = mirror_dir(args.articles) / "truth" / "articles.jsonl"
    records = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines() if line]
    drawn = {"whole words": [0, 0, 0, 0, 0], "random span": [0, 0, 0, 0, 0]}
    # phrases, scanned, missed by the sets; with edge conditions, missed by those
    for record in records:
        text = record["text"]
        if len(text) < 20:
            continue
        held = set(search_words(record["title"], text).split())
        cut = list(rjieba.cut(text))
        for _ in range(args.per_article):
            k = rng.randint(2, 4)
            start = rng.randrange(max(len(cut) - k, 1))
            length = rng.randint(2, 12)
            at = rng.randrange(max(len(text) - length, 1))
            for kind, phrase in (("whole words", "".join(cut[start:start + k])),
                                 ("random span", text[at:at + length])):
                readings = phrase_word_sets(phrase)
                drawn[kind][0] += 1
                if readings is None:
                    drawn[kind][1] += 1  # matched by a scan: nothing to miss
                    continue
                if not any(words <= held for words in readings):
                    drawn[kind][2] += 1
                conditions = phrase_edge_conditions(phrase)
                drawn[kind][3] += bool(conditions)
                if not all(any(words <= held for words in condition) for condition in conditions):
                    drawn[kind][4] += 1
    print(f"{len(records)} texts of the {args.articles}-article mirror")
    for kind, (phrases, scanned, missed, narrowed, missed_narrowed) in drawn.items():
        indexed = phrases - scanned
        print(f"  {kind}: {phrases} phrases, {scanned} scanned (no word to look up), "
              f"{indexed} through the index, {missed} of them missed "
              f"({100 * missed / max(indexed, 1):.2f} %); {narrowed} with edge conditions, "
              f"{missed_narrowed} of them missed by those")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
