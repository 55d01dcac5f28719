"""newscrawl's own Scrapy signals (sent with crawler.signals.send_catch_log)."""

# MongoPipeline, when it opens: it will send `items_durable` (the frontier then waits for it
# rather than for a fixed window).
storage_opened = object()
# MongoPipeline, after a write: every item it had received by `taken_at` (time.monotonic())
# is in the database or the spool.
items_durable = object()
