"""Distributed crawling: a run's request frontier and dupefilter in Redis (an add-on)."""
