"""The operators' side: the `newscrawl` command, one module per command, and crawl processes."""
