"""`newscrawl replay`: write what a database outage spooled to disk (pipelines.storage)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_replay(args: argparse.Namespace) -> int:
    from newscrawl.database import spool_dir, storage_config
    from pipelines.storage import ArticleStore, Spool, replay

    config = storage_config(database=args.database, spool_dir=args.spool_dir)
    spool = Spool(spool_dir(config.spool_dir))
    store = ArticleStore.from_config(config)
    try:
        totals = replay(store, spool)
    finally:
        store.close()
    print(", ".join(f"{k}: {v}" for k, v in sorted(totals.items())) or "nothing to replay")
    if totals["bad_lines"]:
        print(f"newscrawl: {totals['bad_lines']} lines could not be read: set aside in "
              f"{spool.directory / 'bad' / Spool.BAD_LINES} (with their file and line number)",
              file=sys.stderr)
    return 0


def add_command(sub: Any) -> None:
    rep = sub.add_parser("replay", help="write spooled items to the database",
                         description="Write what a database outage spooled to disk, then "
                                     "remove the spool files that were written.")
    rep.add_argument("--spool-dir", help="default NEWSCRAWL_SPOOL_DIR or .local/spool")
    rep.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    rep.set_defaults(func=cmd_replay)
