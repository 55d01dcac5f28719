"""newscrawl: Chinese financial news into MongoDB, with Scrapy."""

__version__ = "0.1.0"
