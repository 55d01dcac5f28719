"""The operators' side: the `newscrawl` command (one module per command), the crawl process, the
scheduler, backfill, runs and queries.
"""
