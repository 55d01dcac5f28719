"""Distributed crawling: the run's request frontier and dupefilter in Redis, shared by many crawl
processes (an add-on).
"""
