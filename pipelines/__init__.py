"""Item pipelines: the pure core, the Scrapy steps and MongoDB storage around it (never newscrawl)."""
