"""Building the mirror: the generator, Jekyll's rendering, and the cache, in seconds.

    .local/venv/bin/python bench/mirror_build.py [--articles 10000] [--categories N]
        [--repeat 1] [--json PATH]

For each size: a build with the cache off (`build_mirror(cache=False)`: the
generator writes the site's source and the truth, Debian's jekyll renders the
aggregator), Jekyll's render alone again on the same source, and a cache hit
(`build_mirror` of a mirror the cache holds: a copy); wall-clock and CPU
seconds (CPU tells apart a slow build from a busy machine). The issue's target:
a 10,000-article mirror in at most 2 minutes on this machine. `--categories` builds
mirrors of that many categories (`--articles 15800 --categories 2000`: the real site's
size, issue 19, whose budget is the 10,000-article build's seconds per article).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.common import bench_parser, figures, machine, show, show_machine, write_json
from fixtures import jekyll
from fixtures.generate import SOURCE_DIR, build_mirror

SEED = 20211231


def cpu_seconds() -> float:
    """CPU (user + system) of this process and its finished children: Jekyll runs as one."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_size(articles: int, repeat: int, categories: int | None = None) -> dict[str, Any]:
    builds: list[float] = []
    build_cpu: list[float] = []
    renders: list[float] = []
    render_cpu: list[float] = []
    hits: list[float] = []
    posts = 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp:
            out = Path(tmp) / "mirror"
            started, cpu = time.perf_counter(), cpu_seconds()
            manifest = build_mirror(out, articles=articles, seed=SEED, cache=False,
                                    categories=categories)
            builds.append(time.perf_counter() - started)
            build_cpu.append(cpu_seconds() - cpu)
            posts = manifest.counts["posts"]
            again = Path(tmp) / "render-again"
            started, cpu = time.perf_counter(), cpu_seconds()
            jekyll.build(out / SOURCE_DIR, again)
            renders.append(time.perf_counter() - started)
            render_cpu.append(cpu_seconds() - cpu)
            shutil.rmtree(again)
            # fills the cache (or hits it)
            build_mirror(out, articles=articles, seed=SEED, categories=categories)
            hit = Path(tmp) / "hit"
            started = time.perf_counter()
            build_mirror(hit, articles=articles, seed=SEED, categories=categories)
            hits.append(time.perf_counter() - started)
    return {"articles": articles, "categories": categories, "posts": posts,
            "build_s": figures(builds),
            "build_cpu_ms_per_article": round(1000 * statistics.median(build_cpu) / articles, 2),
            "build_cpu_s": figures(build_cpu), "jekyll_render_s": figures(renders),
            "jekyll_render_cpu_s": figures(render_cpu), "cache_hit_s": figures(hits)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=[10_000], repeat=1)
    parser.add_argument("--categories", type=int, help="categories (default: as the size brings)")
    args = parser.parse_args(argv)
    facts = machine()
    print(show_machine(facts))
    print(f"jekyll: {jekyll.version()}")
    results = []
    for articles in args.articles:
        result = one_size(articles, args.repeat, args.categories)
        results.append(result)
        print(f"{articles} articles ({result['posts']} post pages): "
              f"build {show(result['build_s'], 's')} ({show(result['build_cpu_s'], 's')} CPU, "
              f"{result['build_cpu_ms_per_article']} ms CPU an article), "
              f"Jekyll's render alone {show(result['jekyll_render_s'], 's')} "
              f"({show(result['jekyll_render_cpu_s'], 's')} CPU); "
              f"cache hit {show(result['cache_hit_s'], 's')}",
              flush=True)
    write_json(args.json, {"machine": facts, "jekyll": jekyll.version(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
