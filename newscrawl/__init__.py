"""newscrawl: the Scrapy project that ingests Chinese financial news into MongoDB (spiders,
parsers, components, the distributed frontier, the operators' commands, the local servers).
"""

__version__ = "0.1.0"
