"""Scrapy components wired by settings: middlewares, host map, incremental filter, run recorder."""
