"""Passwords out of everything newscrawl prints or logs.

`redact` masks the password of every URI in a text (`mongodb://user:***@host`,
`rediss://:***@host`) and `password=` in query strings. `install_log_redaction`
makes every log record go through it: Scrapy logs its overridden settings
(MONGO_URI, REDIS_URL among them) before any extension of ours exists, so the
only place to catch them all is the record itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# scheme://user:password@ (user may be empty: redis://:password@host)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:]*):[^\s/@]*@")
# ...?password=secret&... or &authPassword=...
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&;][A-Za-z]*[Pp]assword=)[^&\s'\"]*")
MASK = "***"


def redact(text: str) -> str:
    """`text` with the password of every URI in it masked."""
    if "@" not in text and "assword=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", text)


def _redacting_factory(previous: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: left for the handler to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
        return record

    factory.newscrawl_redacts = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Redact every log record of this process from now on (once, however often called)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "newscrawl_redacts", False):
        logging.setLogRecordFactory(_redacting_factory(current))
