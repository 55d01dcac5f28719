"""Chinese word segmenters from PyPI on our texts: microseconds per article, characters/s.

    .local/venv/bin/python bench/segmenters.py [--articles 10000] [--repeat 3] [--json PATH]

The texts are the title + text of every article of a generated mirror's ground
truth (the shared corpus's real posts included). Each candidate segments all
of them in precise mode and in search mode (long words also split into their
dictionary sub-words), in this one thread, after one warm-up pass (the
dictionary load is timed apart, cold: a fresh process per candidate).
Candidates not installed are reported as such; install them into the venv to
compare (`pip install jieba jieba-fast rjieba`). `pipelines.search.segment`
(the chosen segmenter in search mode plus the project's token filter, as the
store runs it; its precise mode is `query_terms`) is timed too. Agreement: the
share of articles whose precise-mode words equal jieba's, as they are and after
the token filter.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import PYTHON, bench_parser, figures, machine, show, show_machine, write_json
from bench.mirror import mirror_dir

# name -> (import statement, precise-mode call, search-mode call) on a str `t`
CANDIDATES: dict[str, tuple[str, str, str]] = {
    "jieba": ("import jieba as m; m.setLogLevel(60); m.initialize()",
              "m.lcut(t)", "m.lcut_for_search(t)"),
    "jieba-fast": ("import jieba_fast as m; m.setLogLevel(60); m.initialize()",
                   "m.lcut(t)", "m.lcut_for_search(t)"),
    "rjieba": ("import rjieba as m; m.cut('预热')", "m.cut(t)", "m.cut_for_search(t)"),
    "pipelines.search.segment": ("import pipelines.search as m; m.segment('预热')",
                                 "m.query_terms(t)", "m.segment(t)"),
}
NOT_CANDIDATES = {
    "spacy-pkuseg / pkuseg": "ships no model: pkuseg() downloads one from GitHub at first use",
    "cppjieba-py": "does not build from its sdist here (pybind11 install step fails)",
}


def token_filter(words: list[str]) -> list[str]:
    return re.findall(r"[^\W_]+", " ".join(words).lower())


def texts_of(out: Path) -> list[str]:
    texts = []
    for line in (out / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines():
        if line:
            record = json.loads(line)
            texts.append(record["title"] + "\n" + record["text"])
    return texts


# Run in a fresh interpreter per candidate, so the dictionary load is cold and nothing is shared.
CHILD = r"""
import json, sys, time
texts = json.load(open(sys.argv[1], encoding="utf-8"))
repeat = int(sys.argv[2])
t0 = time.perf_counter()
try:
    exec(sys.argv[3])
except ImportError as exc:
    print(json.dumps({"missing": str(exc)})); sys.exit(0)
load = time.perf_counter() - t0
precise = eval("lambda t: " + sys.argv[4], {"m": m})
search = eval("lambda t: " + sys.argv[5], {"m": m})
for t in texts[:200]:
    precise(t); search(t)
out = {"load_s": load, "precise_s": [], "search_s": []}
for _ in range(repeat):
    for mode, fn in (("precise_s", precise), ("search_s", search)):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        out[mode].append(time.perf_counter() - t0)
out["words"] = [list(precise(t)) for t in texts]
print(json.dumps(out, ensure_ascii=False))
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=10_000, repeat=3)
    args = parser.parse_args(argv)

    facts = machine()
    print(show_machine(facts))
    out = mirror_dir(args.articles)
    texts = texts_of(out)
    chars = sum(len(t) for t in texts)
    print(f"{len(texts)} articles (title + text) of {out}: {chars} characters, "
          f"{chars / len(texts):.0f} per article")
    texts_file = out.parent / f"segmenter-texts-{args.articles}.json"
    texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")

    results: dict[str, Any] = {}
    reference: list[list[str]] | None = None
    for name, (setup, precise, search) in CANDIDATES.items():
        done = subprocess.run([PYTHON, "-c", CHILD, str(texts_file), str(args.repeat), setup,
                               precise, search], capture_output=True, text=True, check=False,
                              cwd=str(Path(__file__).resolve().parent.parent))
        if done.returncode != 0:
            print(f"{name}: failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if "missing" in result:
            print(f"{name}: not installed ({result['missing']})")
            results[name] = {"missing": result["missing"]}
            continue
        words = result.pop("words")
        if name == "jieba":
            reference = words
        comparable = reference is not None and not name.startswith("pipelines")  # a segmenter's own output
        agree = (sum(a == b for a, b in zip(words, reference, strict=True)) / len(words)
                 if comparable and reference is not None else None)
        # After the project's token filter (letter/digit runs, lowercased), as `words` holds them
        agree_filtered = (sum(token_filter(a) == token_filter(b)
                              for a, b in zip(words, reference, strict=True)) / len(words)
                          if comparable and reference is not None else None)
        per_article: Callable[[float], float] = lambda s: 1e6 * s / len(texts)  # noqa: E731
        fig = {mode: figures(per_article(s) for s in result[f"{mode}_s"])
               for mode in ("precise", "search")}
        rate = {mode: chars / (fig[mode]["median"] * len(texts) / 1e6) for mode in fig}
        results[name] = {"load_s": result["load_s"], "us_per_article": fig,
                         "chars_per_s": rate, "agreement_with_jieba": agree,
                         "agreement_with_jieba_filtered": agree_filtered}
        print(f"{name}: dictionary load {result['load_s']:.2f} s (cold); "
              f"precise {show(fig['precise'], 'µs/article', 0)} = {rate['precise'] / 1e6:.2f} M chars/s; "
              f"search {show(fig['search'], 'µs/article', 0)} = {rate['search'] / 1e6:.2f} M chars/s"
              + (f"; same words as jieba for {agree:.1%} of articles ({agree_filtered:.1%} after "
                 "the token filter)" if agree is not None and agree_filtered is not None else ""),
              flush=True)
    for name, why in NOT_CANDIDATES.items():
        print(f"{name}: not measured: {why}")
    write_json(args.json, {
        "bench": "segmenters", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts, "articles": len(texts), "characters": chars, "results": results,
        "not_measured": NOT_CANDIDATES,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
