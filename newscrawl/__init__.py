"""newscrawl: the Scrapy project, its spiders, components, commands and local servers."""

__version__ = "0.1.0"
