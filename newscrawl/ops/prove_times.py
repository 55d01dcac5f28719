"""`newscrawl prove-times`: prove stored unproven times from stored anchors (pipelines.counter).

For collections written before the counter proof, or whose anchors came from
another process after a crawl closed: it reads what is stored, proves what the
stored anchors decide, and relinks the copies and reprints of records that move.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_prove_times(args: argparse.Namespace) -> int:
    from newscrawl.database import storage_config
    from pipelines.storage import ArticleStore

    store = ArticleStore.from_config(storage_config(database=args.database))
    try:
        proven, left = store.prove_stored_times()
    finally:
        store.close()
    print(f"proven by the article counter: {proven}; still unproven: {left}")
    return 0


def add_command(sub: Any) -> None:
    cmd = sub.add_parser("prove-times", help="prove stored times by the article counter",
                         description=__doc__.splitlines()[0].partition(": ")[2])
    cmd.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    cmd.set_defaults(func=cmd_prove_times)
