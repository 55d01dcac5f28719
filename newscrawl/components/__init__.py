"""Scrapy components wired by settings: middlewares, host map, incremental filter, the
stored records, run recorder."""
