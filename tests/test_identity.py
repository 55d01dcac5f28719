"""Article ids, info codes, content hashes and the choice of body."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from pipelines.identity import (
    BODY_RANK,
    InvalidArticleId,
    article_date,
    article_id,
    article_text,
    better_body,
    body_kind,
    check_article_id,
    content_hash,
    info_code,
)


@pytest.mark.parametrize(
    "code",
    [
        "NW202112312232339262",
        "202112312232339262",
        "/jingzhouribao/2021/12/31/NW202112312232339262.html",
        "https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html",
        "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112312232339262",
        "2021-12-31-NW202112312232339262.md",
    ],
)
def test_article_id_is_found(code: str) -> None:
    assert article_id(code) == "202112312232339262"


def test_article_id_from_a_file_name_without_date() -> None:
    assert article_id("-202205262391921712.md") == "202205262391921712"


def test_article_id_takes_the_last_candidate() -> None:
    url = "/emnews/202112082206885265/202112082206928461.html"
    assert article_id(url) == "202112082206928461"


@pytest.mark.parametrize(
    "code",
    [
        "",
        "NW",
        "20211231223233926",  # 17 digits
        "2021123122323392621",  # 19 digits
        "202113312232339262",  # month 13
        "202102302232339262",  # 30 February
        "/jingzhouribao/2021/12/31/",
    ],
)
def test_invalid_article_ids_raise(code: str) -> None:
    with pytest.raises(InvalidArticleId):
        article_id(code)


def test_invalid_article_id_is_a_value_error() -> None:
    assert issubclass(InvalidArticleId, ValueError)


def test_check_article_id_takes_an_id_as_it_is() -> None:
    assert check_article_id("202112312232339262") == "202112312232339262"


@pytest.mark.parametrize(
    "value",
    [None, "", 202112312232339262, "NW202112312232339262", " 202112312232339262",
     "202113312232339262", "20211231223233926", "２０２１１２３１２２３２３３９２６２"],
)
def test_check_article_id_finds_nothing_it_is_not_given(value: object) -> None:
    with pytest.raises(InvalidArticleId):
        check_article_id(value)


def test_article_date() -> None:
    assert article_date("202112312232339262") == date(2021, 12, 31)
    assert article_date("202102302232339262") is None


def test_article_text_joins_paragraphs_with_newlines() -> None:
    assert article_text(["第一段", "第二段"]) == "第一段\n第二段"
    assert article_text([]) == ""


def test_info_code() -> None:
    assert info_code("202112312232339262") == "NW202112312232339262"
    assert info_code("NW202112312232339262") == "NW202112312232339262"
    with pytest.raises(InvalidArticleId):
        info_code("123")


def test_content_hash_is_sha256_of_utf8() -> None:
    text = "第一段\n第二段"
    assert content_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert len(content_hash("")) == 64


def test_body_rank() -> None:
    assert BODY_RANK == {"digest": 0, "rolling": 1, "media": 2, "share": 2}


@pytest.mark.parametrize(
    ("page_kind", "category", "quoted", "paragraphs", "kind"),
    [
        ("post", "emnews", False, ["摘要"], "digest"),
        ("post", "emnews", True, ["摘要"], "digest"),
        ("post", "emnews", True, ["摘要", "全文"], "rolling"),
        ("post", "emnews", False, ["摘要", "全文"], "rolling"),
        ("post", None, True, ["摘要", "全文"], "rolling"),  # a quoted digest marks rolling news
        ("post", "jingzhouribao", False, ["一"], "media"),
        ("post", "jingzhouribao", False, ["一", "二"], "media"),
        ("share", None, False, ["一"], "share"),
        ("share", "emnews", True, ["一", "二"], "share"),
    ],
)
def test_body_kind(
    page_kind: str, category: str | None, quoted: bool, paragraphs: list[str], kind: str
) -> None:
    assert body_kind(page_kind, category, quoted, paragraphs) == kind


def test_better_body_rank_first() -> None:
    assert better_body("media", "短", "rolling", "长长长长长") is True
    assert better_body("digest", "长长长长长", "rolling", "短") is False
    assert better_body("share", "短", "digest", "长长长长长") is True


def test_better_body_longer_on_equal_rank() -> None:
    assert better_body("share", "长长长", "media", "短") is True
    assert better_body("media", "短", "share", "长长长") is False


def test_better_body_tie_keeps_current() -> None:
    assert better_body("share", "一样", "media", "相同") is False
    assert better_body("media", "一样", "media", "一样") is False


def test_better_body_against_nothing() -> None:
    assert better_body("digest", "", None, None) is True
