"""Publication dates: the fast path's formats, relative dates counted from the
fetch, dateparser for the rest, and the errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pipelines.dates import (
    JEKYLL_SHIFT,
    PROOF_COUNTER,
    PROOF_ID_DAY,
    PROOF_SHARE,
    PROOF_TWIN,
    PROOF_UNPROVEN,
    DateParseError,
    TimeClaim,
    check_not_future,
    parse_fast,
    parse_published,
    prove_page_time,
    reconcile_times,
)

# 2021-12-31 11:00 in Shanghai
FETCHED = datetime(2021, 12, 31, 3, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-12-31 08:58:25 +0800", "2021-12-31T00:58:25Z"),  # front matter
        ("2021-12-08 12:41:23", "2021-12-08T04:41:23Z"),  # no offset: Asia/Shanghai
        ("(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25", "2021-12-31T00:58:25Z"),
        ("  (GMT+8, Asia/Shanghai, CST)\n 2021-12-31 08:58:25 ", "2021-12-31T00:58:25Z"),
        ("2021-12-31T08:58:25+08:00", "2021-12-31T00:58:25Z"),  # JSON-LD
        ("2021-12-31 08:58:25 CST", "2021-12-31T00:58:25Z"),  # China Standard Time, not US Central
        ("2021-12-31T00:58:25Z", "2021-12-31T00:58:25Z"),
        ("2021-12-31T08:58:25.5+08:00", "2021-12-31T00:58:25.5Z"),
        ("2021-12-31 08:58", "2021-12-31T00:58:00Z"),
        ("2021/12/31 08:58", "2021-12-31T00:58:00Z"),
        ("2021-12-31", "2021-12-30T16:00:00Z"),  # date only: 00:00
        ("2021年12月31日 08:58", "2021-12-31T00:58:00Z"),
        ("2021年12月31日 08:58:25", "2021-12-31T00:58:25Z"),
        ("2021年12月31日08:58", "2021-12-31T00:58:00Z"),
        ("2021年12月31日", "2021-12-30T16:00:00Z"),
        ("2021-12-31 00:10:05 +0800", "2021-12-30T16:10:05Z"),  # near midnight
    ],
)
def test_absolute_formats(raw: str, expected: str) -> None:
    assert parse_published(raw, fetched_at=FETCHED) == utc(expected)
    assert parse_fast(raw, FETCHED, None) == utc(expected)  # all on the fast path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12月30日上午", "2021-12-30T01:00:00Z"),  # 上午 = 09:00
        ("12月30日 上午", "2021-12-30T01:00:00Z"),
        ("12月30日下午", "2021-12-30T07:00:00Z"),  # 下午 = 15:00
        ("12月30日 10:20", "2021-12-30T02:20:00Z"),
        ("12月30日下午3:20", "2021-12-30T07:20:00Z"),
        ("12月30日晚上8点", "2021-12-30T12:00:00Z"),
        ("12月30日中午12点30分", "2021-12-30T04:30:00Z"),
        ("12月30日", "2021-12-29T16:00:00Z"),
    ],
)
def test_month_and_day_take_the_fetch_year(raw: str, expected: str) -> None:
    assert parse_published(raw, fetched_at=FETCHED) == utc(expected)


def test_month_and_day_take_the_context_year_first() -> None:
    got = parse_published("12月30日上午", fetched_at=FETCHED, context_year=2020)
    assert got == utc("2020-12-30T01:00:00Z")


def test_december_date_read_in_january_is_last_year() -> None:
    fetched = datetime(2022, 1, 1, 2, 0, tzinfo=UTC)
    assert parse_published("12月30日 10:20", fetched_at=fetched) == utc("2021-12-30T02:20:00Z")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("昨天 10:20", "2021-12-30T02:20:00Z"),
        ("昨天10:20", "2021-12-30T02:20:00Z"),
        ("前天 10:20", "2021-12-29T02:20:00Z"),
        ("今天 10:20", "2021-12-31T02:20:00Z"),
        ("今天", "2021-12-30T16:00:00Z"),
        ("前天下午3点", "2021-12-29T07:00:00Z"),
        ("3小时前", "2021-12-31T00:00:00Z"),
        ("5分钟前", "2021-12-31T02:55:00Z"),
        ("2天前", "2021-12-29T03:00:00Z"),
        ("30秒前", "2021-12-31T02:59:30Z"),
        ("刚刚", "2021-12-31T03:00:00Z"),
    ],
)
def test_relative_dates_count_from_the_fetch(raw: str, expected: str) -> None:
    assert parse_published(raw, fetched_at=FETCHED) == utc(expected)
    assert parse_fast(raw, FETCHED, None) == utc(expected)


def test_yesterday_is_relative_to_the_fetch_not_to_now() -> None:
    got = parse_published("昨天 10:20", fetched_at=datetime(2021, 6, 1, 12, 0, tzinfo=UTC))
    assert got == utc("2021-05-31T02:20:00Z")
    assert got.year == 2021


def test_yesterday_uses_the_shanghai_calendar_day() -> None:
    # 2021-12-31 20:00 UTC is already 2022-01-01 in Shanghai
    got = parse_published("昨天 10:20", fetched_at=datetime(2021, 12, 31, 20, 0, tzinfo=UTC))
    assert got == utc("2021-12-31T02:20:00Z")


def test_naive_fetched_at_is_taken_as_utc() -> None:
    got = parse_published("3小时前", fetched_at=datetime(2021, 12, 31, 3, 0))
    assert got == utc("2021-12-31T00:00:00Z")


def test_results_are_aware_utc() -> None:
    got = parse_published("2021-12-31 08:58:25 +0800", fetched_at=FETCHED)
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_other_formats_go_to_dateparser() -> None:
    assert parse_fast("Dec 30, 2021 10:20 AM", FETCHED, None) is None
    got = parse_published("Dec 30, 2021 10:20 AM", fetched_at=FETCHED)
    assert got == utc("2021-12-30T02:20:00Z")  # Asia/Shanghai wall time
    assert parse_published("1 hour ago", fetched_at=FETCHED) == utc("2021-12-31T02:00:00Z")


@pytest.mark.parametrize("raw", ["", "   ", " +0800", "+08:00", "garbage", "不是日期"])
def test_unreadable_dates_raise(raw: str) -> None:
    with pytest.raises(DateParseError):
        parse_published(raw, fetched_at=FETCHED)


def test_offset_only_error_says_why() -> None:
    with pytest.raises(DateParseError, match="only a UTC offset"):
        parse_published(" +0800", fetched_at=FETCHED)
    with pytest.raises(DateParseError, match="empty"):
        parse_published("", fetched_at=FETCHED)


def test_impossible_and_implausible_dates_raise() -> None:
    with pytest.raises(DateParseError, match="impossible"):
        parse_published("2021-02-30 10:00", fetched_at=FETCHED)
    with pytest.raises(DateParseError, match="impossible"):
        parse_published("2021-12-31 25:00", fetched_at=FETCHED)
    with pytest.raises(DateParseError, match="implausible"):
        parse_published("1970-01-01", fetched_at=FETCHED)


def test_date_parse_error_is_a_value_error() -> None:
    assert issubclass(DateParseError, ValueError)


def test_check_not_future() -> None:
    check_not_future(FETCHED, FETCHED)
    check_not_future(FETCHED + timedelta(hours=23), FETCHED)  # clock skew is tolerated
    with pytest.raises(DateParseError, match="after the fetch"):
        check_not_future(FETCHED + timedelta(days=2), FETCHED)
    with pytest.raises(DateParseError):
        check_not_future(FETCHED + timedelta(minutes=5), FETCHED, tolerance=timedelta(0))


# --- which reading of a Jekyll page's time is right ------------------------------

SHANGHAI_TZ = timezone(timedelta(hours=8))
DAY = date(2021, 12, 30)


def shanghai(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI_TZ)


@pytest.mark.parametrize(("shown", "expected", "proof", "shifted"), [
    # Offset-less posts written at 16:00 and 23:59 are shown on the next day: 8 h late.
    ("2021-12-31 00:00", "2021-12-30 16:00", PROOF_ID_DAY, True),
    ("2021-12-31 07:59", "2021-12-30 23:59", PROOF_ID_DAY, True),
    # Shown before 08:00 on the id's day: 8 h earlier is the day before, so it is right.
    ("2021-12-30 00:00", "2021-12-30 00:00", PROOF_ID_DAY, False),
    ("2021-12-30 07:59", "2021-12-30 07:59", PROOF_ID_DAY, False),
    # 08:00 to 23:59 on the id's day fits both readings (written 00:00-15:59 without an
    # offset, or then with one): kept, unproven.
    ("2021-12-30 08:00", "2021-12-30 08:00", PROOF_UNPROVEN, False),
    ("2021-12-30 23:59", "2021-12-30 23:59", PROOF_UNPROVEN, False),
    # Neither reading gives the id's day: nothing to correct by.
    ("2022-01-02 10:00", "2022-01-02 10:00", PROOF_UNPROVEN, False),
])
def test_a_page_time_is_checked_against_the_ids_day(shown: str, expected: str, proof: str,
                                                     shifted: bool) -> None:
    claim = prove_page_time(shanghai(shown), DAY)
    assert claim == TimeClaim(shanghai(expected), proof, shifted)
    assert prove_page_time(shanghai(shown), None).proof == PROOF_UNPROVEN


def test_twins_8_hours_apart_prove_the_later_one_late() -> None:
    media = TimeClaim(shanghai("2021-12-30 15:59"), PROOF_UNPROVEN)  # written with +0800
    rolling = TimeClaim(shanghai("2021-12-30 23:59"), PROOF_UNPROVEN)  # without
    assert reconcile_times(media, rolling) == TimeClaim(media.at, PROOF_TWIN)
    assert reconcile_times(rolling, media) == TimeClaim(media.at, PROOF_TWIN, shifted=True)
    # Twins are posted minutes apart, not to the second.
    later = TimeClaim(shanghai("2021-12-31 00:02"), PROOF_UNPROVEN)
    assert reconcile_times(media, later).proof == PROOF_TWIN
    # Equal times prove nothing; other gaps neither.
    assert reconcile_times(media, media) == media
    odd = TimeClaim(shanghai("2021-12-30 19:00"), PROOF_UNPROVEN)
    assert reconcile_times(media, odd) == media


def test_a_share_time_wins_and_a_proven_time_proves_or_corrects() -> None:
    page = TimeClaim(shanghai("2021-12-30 20:00"), PROOF_UNPROVEN)
    share = TimeClaim(shanghai("2021-12-30 12:00"), PROOF_SHARE)
    assert reconcile_times(page, share) == share
    assert reconcile_times(share, page) == share
    proven = TimeClaim(shanghai("2021-12-30 12:00"), PROOF_ID_DAY, shifted=True)
    assert reconcile_times(page, proven) == TimeClaim(shanghai("2021-12-30 12:00"), PROOF_ID_DAY,
                                                      shifted=True)
    agreeing = TimeClaim(shanghai("2021-12-30 20:00"), PROOF_ID_DAY)
    assert reconcile_times(page, agreeing) == TimeClaim(page.at, PROOF_ID_DAY)
    assert reconcile_times(agreeing, page) == agreeing  # a proven time stays


# A media post and its rolling-news twin posted minutes later, one written with `+0800` and
# the other without, its page 8 hours late. The record's headline is the media post's (the
# better body), so its time is the media post's, whatever order the sightings come in and
# whatever the counter proved of either meanwhile: the four wrong times of the site-scale
# mirror (bench/RESULTS.md 19), in its two shapes.
@pytest.mark.parametrize(("media_written", "media_late", "rolling_written", "proof"), [
    # As 202112312232961153: the rolling page shows the next day, the id's day proves it late.
    ("2021-12-30 17:15", False, "2021-12-30 17:17", PROOF_ID_DAY),
    # As 202112312232089974: the media page is late; the rolling page's early hour is proven.
    ("2021-12-30 02:22", True, "2021-12-30 02:25", PROOF_ID_DAY),
    # Both pages fit both readings: only the twins prove it, either way round.
    ("2021-12-30 10:00", False, "2021-12-30 10:02", PROOF_TWIN),
    ("2021-12-30 10:00", True, "2021-12-30 10:02", PROOF_TWIN),
])
def test_twins_give_the_media_posts_time_whatever_the_order(
        media_written: str, media_late: bool, rolling_written: str, proof: str) -> None:
    media_at, rolling_at = shanghai(media_written), shanghai(rolling_written)
    media_page = prove_page_time(media_at + JEKYLL_SHIFT * media_late, DAY)
    rolling_page = prove_page_time(rolling_at + JEKYLL_SHIFT * (not media_late), DAY)
    # What each can be when the other arrives: its page's claim, or, stored alone first and
    # unproven, what the counter proved of it (its right reading).
    medias = [media_page]
    if not media_page.proven:
        medias.append(TimeClaim(media_at, PROOF_COUNTER, shifted=media_late))
    rollings = [rolling_page]
    if not rolling_page.proven:
        rollings.append(TimeClaim(rolling_at, PROOF_COUNTER, shifted=not media_late))
    for media in medias:
        for rolling in rollings:
            # The media post's claim is the headline's whichever is stored first.
            claim = reconcile_times(media, rolling)
            assert claim.at == media_at, (media, rolling)
            assert claim == TimeClaim(media_at, proof, shifted=media_late), (media, rolling)
