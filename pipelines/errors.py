"""Why an item was dropped, in a form storage can record."""

from __future__ import annotations

from scrapy.exceptions import DropItem


class RejectItem(DropItem):
    """An item that cannot become a record. `reason` says why in a few words
    (`empty body`, `no article id`, …); storage catches it through the
    `item_dropped` signal and writes it to the rejects collection."""

    def __init__(self, reason: str, log_level: str | None = None) -> None:
        super().__init__(reason, log_level)
        self.reason = reason
