"""Item pipelines: a pure core (cleaning, dates, sources, identity, records, search, neardup) and
the Scrapy steps (`steps`, `mongo`) and MongoDB storage (`storage`) that wrap it; never imports
newscrawl.
"""
