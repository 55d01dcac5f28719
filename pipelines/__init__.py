"""Item pipelines of newscrawl: a pure core (cleaning, dates, sources, identity)
and thin Scrapy steps (`pipelines.steps`) that adapt items to it."""
