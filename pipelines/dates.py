"""Publication dates as the sites write them, to aware UTC datetimes.

Known formats go through a fast path (compiled regexes and plain datetime
construction); dateparser, which costs milliseconds a call, only sees the
rest. Everything relative (`昨天`, `3小时前`, a year left out) is relative to
when the page was fetched, never to now, so re-parsing old pages is stable.

Rules where the text is vague (all in Asia/Shanghai):
- a date with no time of day is 00:00;
- a part of the day with no clock time is a fixed hour: 凌晨 03:00,
  早上/早晨/清晨 07:00, 上午 09:00, 中午 12:00, 下午 15:00, 傍晚 18:00,
  晚上/晚间/夜间 20:00; with a clock time, 下午/傍晚/晚上/晚间/夜间 add 12
  hours to hours before 12, 中午 to hours before 11;
- month and day with no year take `context_year` (the article id's year)
  when given, else the fetch year in Shanghai, moved back one year when that
  would put the date more than a day after the fetch (a December article
  fetched in January);
- `N天前` keeps the fetch's time of day; `刚刚`/`刚才` is the fetch time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from datetime import date as date_type
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
_EARLIEST_PLAUSIBLE_YEAR = 1990  # the portals date from the 2000s; anything older is a misread


class DateParseError(ValueError):
    """A date text that cannot be read, or a date that cannot be true."""


_WHITESPACE_RUN = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]+")
# `(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25`: the prefix gives the offset.
_GMT_PREFIX = re.compile(
    r"^\(\s*(?:GMT|UTC)\s*(?P<sign>[+-])\s*(?P<hours>\d{1,2})(?::?(?P<minutes>\d{2}))?[^)]*\)\s*",
    re.IGNORECASE,
)
# CST on a Chinese site is China Standard Time (+08:00); dateparser reads it as US Central.
_UTC_OFFSET = r"(?P<tz>Z|UTC|GMT|CST|[+-]\d{2}:?\d{2})"
_CLOCK = (
    r"(?P<hour>\d{1,2})[:：](?P<minute>\d{2})"
    r"(?:[:：](?P<second>\d{2})(?:[.,](?P<fraction>\d{1,6})\d*)?)?"
)
_CHINESE_CLOCK = (
    r"(?:(?P<hour>\d{1,2})(?:[:：](?P<minute>\d{2})(?:[:：](?P<second>\d{2}))?"
    r"|[点时](?:(?P<cn_minute>\d{1,2})分?)?))"
)
_PERIODS = "凌晨|早上|早晨|清晨|上午|中午|下午|傍晚|晚上|晚间|夜间"
_PERIOD = f"(?P<period>{_PERIODS})"

# 2021-12-31 08:58:25 +0800, 2021-12-31T08:58:25+08:00, 2021/12/31 08:58, 2021-12-31
_NUMERIC_DATE = re.compile(
    rf"^(?P<year>\d{{4}})[-/.](?P<month>\d{{1,2}})[-/.](?P<day>\d{{1,2}})"
    rf"(?:(?:T|\s*)(?:{_CLOCK}))?\s*{_UTC_OFFSET}?$",
    re.IGNORECASE,
)
# 2021年12月31日 08:58, 12月30日上午, 12月30日 10:20, 12月30日
_CHINESE_DATE = re.compile(
    rf"^(?:(?P<year>\d{{4}})\s*年\s*)?(?P<month>\d{{1,2}})\s*月\s*(?P<day>\d{{1,2}})\s*[日号]"
    rf"\s*{_PERIOD}?\s*{_CHINESE_CLOCK}?\s*{_UTC_OFFSET}?$"
)
# 昨天 10:20, 前天下午3点, 今天
_RELATIVE_DAY = re.compile(
    rf"^(?P<day_word>今天|今日|昨天|昨日|前天)\s*{_PERIOD}?\s*{_CHINESE_CLOCK}?$"
)
# 3小时前, 5分钟前, 2天前
_AGO = re.compile(r"^(?P<count>\d{1,4})\s*(?P<unit>秒钟?|分钟|分|个?小时|天|日|周|个?星期)\s*前$")
_JUST_NOW = frozenset({"刚刚", "刚才"})
_OFFSET_ONLY = re.compile(rf"^{_UTC_OFFSET}$", re.IGNORECASE)

_DAYS_BACK = {"今天": 0, "今日": 0, "昨天": 1, "昨日": 1, "前天": 2}
_AGO_UNITS = {
    "秒": timedelta(seconds=1),
    "秒钟": timedelta(seconds=1),
    "分": timedelta(minutes=1),
    "分钟": timedelta(minutes=1),
    "小时": timedelta(hours=1),
    "个小时": timedelta(hours=1),
    "天": timedelta(days=1),
    "日": timedelta(days=1),
    "周": timedelta(weeks=1),
    "星期": timedelta(weeks=1),
    "个星期": timedelta(weeks=1),
}
_PERIOD_DEFAULT_HOUR = {
    "凌晨": 3, "早上": 7, "早晨": 7, "清晨": 7, "上午": 9, "中午": 12,
    "下午": 15, "傍晚": 18, "晚上": 20, "晚间": 20, "夜间": 20,
}  # fmt: skip
_AFTERNOON_PERIODS = frozenset({"下午", "傍晚", "晚上", "晚间", "夜间"})

_DATEPARSER_LANGUAGES = ["zh", "en"]


def _as_utc(moment: datetime) -> datetime:
    # fetched_at is documented as UTC; a naive one is taken as UTC, not local time
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _offset_zone(tz_text: str | None, default: tzinfo) -> tzinfo:
    if tz_text is None:
        return default
    if tz_text.upper() in ("Z", "UTC", "GMT"):
        return UTC
    if tz_text.upper() == "CST":
        return SHANGHAI
    sign = -1 if tz_text[0] == "-" else 1
    digits = tz_text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _clock(match: re.Match[str]) -> tuple[int, int, int, int] | None:
    """(hour, minute, second, microsecond) of a match, None when it has no time."""
    hour = match["hour"]
    if hour is None:
        return None
    groups = match.groupdict()
    minute = groups.get("minute") or groups.get("cn_minute") or 0
    fraction = groups.get("fraction") or ""
    microsecond = int(fraction.ljust(6, "0")) if fraction else 0
    return int(hour), int(minute), int(groups.get("second") or 0), microsecond


def _time_of_day(match: re.Match[str]) -> tuple[int, int, int, int]:
    """Clock time of a Chinese-style match, with the part-of-day rules applied."""
    period = match["period"]
    clock = _clock(match)
    if clock is None:
        return (_PERIOD_DEFAULT_HOUR[period] if period else 0), 0, 0, 0
    hour, minute, second, microsecond = clock
    if (period in _AFTERNOON_PERIODS and hour < 12) or (period == "中午" and hour < 11):
        hour += 12
    return hour, minute, second, microsecond


def _build(
    year: int, month: int, day: int, clock: tuple[int, int, int, int], zone: tzinfo, raw: str
) -> datetime:
    hour, minute, second, microsecond = clock
    try:
        return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone)
    except ValueError as error:  # 2021-02-30, 25:00 ...
        raise DateParseError(f"impossible date {raw!r}: {error}") from None


def _collapse(raw: str) -> str:
    return _WHITESPACE_RUN.sub(" ", raw).strip()


def parse_fast(raw: str, fetched_at: datetime, context_year: int | None = None) -> datetime | None:
    """The known formats, in UTC; None when `raw` is in none of them.

    Raises DateParseError when the format is known but the values are impossible.
    """
    text = _collapse(raw)
    default_zone: tzinfo = SHANGHAI
    prefix = _GMT_PREFIX.match(text)
    if prefix is not None:
        sign = -1 if prefix["sign"] == "-" else 1
        offset = timedelta(hours=int(prefix["hours"]), minutes=int(prefix["minutes"] or 0))
        default_zone = timezone(sign * offset)
        text = text[prefix.end() :]

    match = _NUMERIC_DATE.match(text)
    if match is not None:
        clock = _clock(match) or (0, 0, 0, 0)
        zone = _offset_zone(match["tz"], default_zone)
        year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
        return _build(year, month, day, clock, zone, raw).astimezone(UTC)

    fetched_utc = _as_utc(fetched_at)
    match = _CHINESE_DATE.match(text)
    if match is not None:
        zone = _offset_zone(match["tz"], default_zone)
        month, day, clock = int(match["month"]), int(match["day"]), _time_of_day(match)
        if match["year"] is not None:
            return _build(int(match["year"]), month, day, clock, zone, raw).astimezone(UTC)
        if context_year is not None:
            return _build(context_year, month, day, clock, zone, raw).astimezone(UTC)
        fetch_year = fetched_utc.astimezone(zone).year
        moment = _build(fetch_year, month, day, clock, zone, raw)
        if moment - fetched_utc > timedelta(days=1):  # written last year, read this year
            moment = _build(fetch_year - 1, month, day, clock, zone, raw)
        return moment.astimezone(UTC)

    match = _RELATIVE_DAY.match(text)
    if match is not None:
        fetch_day = fetched_utc.astimezone(default_zone).date() - timedelta(
            days=_DAYS_BACK[match["day_word"]]
        )
        return _build(
            fetch_day.year, fetch_day.month, fetch_day.day, _time_of_day(match), default_zone, raw
        ).astimezone(UTC)

    match = _AGO.match(text)
    if match is not None:
        return fetched_utc - int(match["count"]) * _AGO_UNITS[match["unit"]]

    if text in _JUST_NOW:
        return fetched_utc
    return None


def _parse_with_dateparser(text: str, fetched_at: datetime) -> datetime | None:
    import dateparser  # costly import, only needed off the fast path

    settings: dict[str, Any] = {
        "TIMEZONE": "Asia/Shanghai",
        "RETURN_AS_TIMEZONE_AWARE": True,
        # dateparser reads a naive base as a wall time in TIMEZONE
        "RELATIVE_BASE": _as_utc(fetched_at).astimezone(SHANGHAI).replace(tzinfo=None),
        "PREFER_DATES_FROM": "past",
    }
    parsed: datetime | None = dateparser.parse(
        text, languages=_DATEPARSER_LANGUAGES, settings=settings
    )
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=SHANGHAI)
    return parsed.astimezone(UTC)


def parse_published(raw: str, *, fetched_at: datetime, context_year: int | None = None) -> datetime:
    """The moment `raw` names, as an aware UTC datetime.

    `fetched_at` is when the page was fetched (relative dates count from it);
    `context_year` is the year to assume when the text gives none.
    """
    text = _collapse(raw or "")
    if not text:
        raise DateParseError("empty date")
    if _OFFSET_ONLY.match(text):
        # dateparser would read `+0800` as the year 800
        raise DateParseError(f"no date in {raw!r}, only a UTC offset")
    try:
        parsed = parse_fast(text, fetched_at, context_year)
        if parsed is None:
            parsed = _parse_with_dateparser(text, fetched_at)
    except DateParseError:
        raise
    except (ValueError, ArithmeticError, RecursionError) as error:
        # A UTC offset of 24 h or more, year 1 or 9999 moved past the calendar by its offset
        # (OverflowError), whatever dateparser trips on: a reject, not a crash.
        raise DateParseError(f"impossible date {raw!r}: {type(error).__name__}: {error}") from None
    if parsed is None:
        raise DateParseError(f"unreadable date {raw!r}")
    latest_plausible_year = _as_utc(fetched_at).year + 1
    if not _EARLIEST_PLAUSIBLE_YEAR <= parsed.year <= latest_plausible_year:
        raise DateParseError(f"implausible date {parsed.isoformat()} read from {raw!r}")
    return parsed


def check_not_future(
    published: datetime, fetched_at: datetime, tolerance: timedelta = timedelta(days=1)
) -> None:
    """Raise DateParseError when `published` lies after the fetch (beyond `tolerance`)."""
    fetched_utc = _as_utc(fetched_at)
    if _as_utc(published) > fetched_utc + tolerance:
        raise DateParseError(
            f"date {published.isoformat()} is after the fetch at {fetched_utc.isoformat()}"
        )


# --- which reading of a page's time is right -----------------------------------
#
# The aggregator is rendered by Jekyll, which reads a front-matter time written
# without an offset as UTC and prints it in Asia/Shanghai: such a page shows the
# writer's time 8 hours late. The page cannot say which kind of post it was, so
# every page time is checked against what does tell (docs/schema.md,
# `published_at_proof`).

JEKYLL_SHIFT = timedelta(hours=8)  # Asia/Shanghai's offset: what an offset-less time gains
TWIN_TOLERANCE = timedelta(minutes=30)  # twins of one article are posted minutes apart

PROOF_SHARE = "share"  # the share host's own time, which Jekyll never touched
PROOF_ID_DAY = "id_day"  # the id's day admits one reading of the page's time only
PROOF_TWIN = "twin"  # another page of the article shows a time 8 hours apart
# the article number's proven neighbours admit one reading only (pipelines/counter.py)
PROOF_COUNTER = "counter"
PROOF_UNPROVEN = "unproven"  # nothing tells: the page's time is kept
PROVEN = frozenset({PROOF_SHARE, PROOF_ID_DAY, PROOF_TWIN, PROOF_COUNTER})


@dataclass(frozen=True)
class TimeClaim:
    """A publication time and what proves it; `shifted`: moved back from what the page showed."""

    at: datetime
    proof: str
    shifted: bool = False

    @property
    def proven(self) -> bool:
        return self.proof in PROVEN


def prove_page_time(shown: datetime, article_day: date_type | None) -> TimeClaim:
    """The time a post page shows, checked against its article id's day (the writer's, Shanghai).

    A shown day after the id's is 8 hours late (the reading the id admits);
    a shown time before 08:00 on the id's day is right (8 hours earlier is the
    day before). Any other shown time fits both readings: kept, unproven.
    """
    if article_day is None:
        return TimeClaim(shown, PROOF_UNPROVEN)
    local = shown.astimezone(SHANGHAI)
    earlier = (shown - JEKYLL_SHIFT).astimezone(SHANGHAI)
    if local.date() > article_day and earlier.date() == article_day:
        return TimeClaim(shown - JEKYLL_SHIFT, PROOF_ID_DAY, shifted=True)
    if local.date() == article_day and earlier.date() < article_day:
        return TimeClaim(shown, PROOF_ID_DAY)
    return TimeClaim(shown, PROOF_UNPROVEN)


def _near(delta: timedelta, target: timedelta) -> bool:
    return abs(delta - target) <= TWIN_TOLERANCE


def _shown(claim: TimeClaim) -> datetime:
    """The time the claim's page showed."""
    return claim.at + JEKYLL_SHIFT if claim.shifted else claim.at


def _page_claim(claim: TimeClaim) -> TimeClaim:
    """What the article's own pages say of a claim: a counter proof is its neighbours' word,
    so its page's time, unproven."""
    return TimeClaim(_shown(claim), PROOF_UNPROVEN) if claim.proof == PROOF_COUNTER else claim


def reconcile_times(kept: TimeClaim, other: TimeClaim) -> TimeClaim:
    """The record's time (`kept`, from its headline page) given another sighting's.

    A share time wins over a page's. Otherwise the time is always a reading of
    the headline page's: another page (a twin posted minutes later) only proves
    which reading. Two pages of one article whose times differ by 8 hours prove
    the later one late. A proven time proves an unproven one that agrees with
    it, or shows it 8 hours late. The article's own pages prove before the
    counter (its neighbours) does, so the result does not depend on whether the
    counter proved either sighting before the other came.
    """
    if kept.proof == PROOF_SHARE:
        return kept
    if other.proof == PROOF_SHARE:
        return other
    if PROOF_COUNTER in (kept.proof, other.proof):
        by_pages = _reconcile_pages(_page_claim(kept), _page_claim(other))
        if by_pages.proven:
            return by_pages
    return _reconcile_pages(kept, other)


def _reconcile_pages(kept: TimeClaim, other: TimeClaim) -> TimeClaim:
    if kept.proven:
        return kept
    gap = kept.at - other.at
    # An unproven time is the page's, never shifted; a page is never early.
    if _near(gap, JEKYLL_SHIFT):  # kept is the late one
        return TimeClaim(kept.at - JEKYLL_SHIFT, other.proof if other.proven else PROOF_TWIN,
                         shifted=True)
    if other.proven and _near(gap, timedelta(0)):
        return TimeClaim(kept.at, other.proof)
    if not other.proven and _near(-gap, JEKYLL_SHIFT):  # the other page is the late one
        return TimeClaim(kept.at, PROOF_TWIN)
    return kept
