"""Article identity and which of two bodies to keep (record contract).

An article id is 18 digits, the publication date `YYYYMMDD` then 10 more; the
info code is `NW` + id. The same article seen as rolling news, media news or
on the share host is one record, so everything keys on the id. Spiders find
the id (`article_id`) and put it on the item; the pipelines only check it
(`check_article_id`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import date

_INFO_CODE_PREFIX = "NW"
# 18 digits not inside a longer run of digits: finds the id in `NW…`, a post
# URL, a share URL or a post file name.
_ID_CANDIDATE = re.compile(r"(?<!\d)(\d{18})(?!\d)")
_ID = re.compile(r"[0-9]{18}")

# Body ranks: a post's full text or the share text beat a digest plus text,
# which beats a digest alone.
BODY_RANK: dict[str, int] = {"digest": 0, "rolling": 1, "media": 2, "share": 2}
ROLLING_NEWS_CATEGORY = "emnews"


class InvalidArticleId(ValueError):
    """No 18-digit id starting with a valid date where one was expected."""


def article_date(article_id: str) -> date | None:
    """The day an article id starts with (its writer's, in Shanghai); None when
    its first eight digits are no date."""
    try:
        return date(int(article_id[:4]), int(article_id[4:6]), int(article_id[6:8]))
    except ValueError:
        return None


def _starts_with_date(digits: str) -> bool:
    return article_date(digits) is not None


def _find_article_id(code: str) -> str:
    candidates: list[str] = [
        digits for digits in _ID_CANDIDATE.findall(code or "") if _starts_with_date(digits)
    ]
    if not candidates:
        raise InvalidArticleId(f"no article id (18 digits starting with a date) in {code!r}")
    # the article's own id is the file name at the end of a path or query
    return candidates[-1]


def article_id(code: str) -> str:
    """The 18-digit article id in an info code, bare id, URL or file name
    (the last one when several qualify)."""
    return _find_article_id(code)


def check_article_id(value: object) -> str:
    """`value` itself when it is an article id (18 digits starting with a date),
    else InvalidArticleId: what the pipelines do with the id a spider gives."""
    if not isinstance(value, str) or not _ID.fullmatch(value) or not _starts_with_date(value):
        raise InvalidArticleId(f"not an article id (18 digits starting with a date): {value!r}")
    return value


def info_code(article_id: str) -> str:
    """`NW` + the id (the share host's `infoCode`)."""
    return _INFO_CODE_PREFIX + _find_article_id(article_id)


def article_text(paragraphs: Iterable[str]) -> str:
    """The record's `text`: its paragraphs joined by newlines (record contract)."""
    return "\n".join(paragraphs)


def content_hash(text: str) -> str:
    """SHA-256 hex of the UTF-8 text: equal bodies under two ids share it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def body_kind(page_kind: str, category: str | None, quoted: bool, paragraphs: list[str]) -> str:
    """Which kind of body a sighting supplies (`digest`, `rolling`, `media`, `share`).

    A share-host page gives `share`. Rolling news (category `emnews`, or any
    body opening with a blockquote digest) gives `digest` when the digest is
    all there is (one paragraph) and `rolling` when text follows it; any
    other post page gives `media`.
    """
    if page_kind == "share":
        return "share"
    if category == ROLLING_NEWS_CATEGORY or quoted:
        return "digest" if len(paragraphs) <= 1 else "rolling"
    return "media"


def better_body(
    candidate_kind: str, candidate_text: str, current_kind: str | None, current_text: str | None
) -> bool:
    """Whether the candidate body replaces the current one: higher rank wins,
    then longer text; a tie keeps the current body."""
    if current_kind is None or current_text is None:
        return True
    candidate_rank, current_rank = BODY_RANK[candidate_kind], BODY_RANK[current_kind]
    if candidate_rank != current_rank:
        return candidate_rank > current_rank
    return len(candidate_text) > len(current_text)
