"""Scrapy components wired by settings: middlewares, the host map, the incremental filter, the
dupefilter, the stats file and the run recorder.
"""
