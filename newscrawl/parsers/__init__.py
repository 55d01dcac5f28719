"""Per-layout page parsers: one declarative class per layout a site has had.

A parser reads a page into raw fields (what the page says); it never cleans
or normalises. Selectors are class attributes compiled once.
"""

from newscrawl.parsers.aggregator import BackLink, ListingEntry, ListingPage, PostPage
from newscrawl.parsers.share import ShareText, parse_share_json

__all__ = ["BackLink", "ListingEntry", "ListingPage", "PostPage", "ShareText", "parse_share_json"]
