"""The storage pipeline's Scrapy signals (sent with crawler.signals.send_catch_log).

Defined here, beside the pipeline that sends or takes them, so that newscrawl's
components can listen without pipelines knowing about them.
"""

# MongoPipeline, when it opens: it will send `items_durable` (the frontier then waits for it
# rather than for a fixed window).
storage_opened = object()
# MongoPipeline, after a write: every item it had received by `taken_at` (time.monotonic())
# is in the database or the spool.
items_durable = object()
