"""The source registry and the contract's order of trust for `source`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.sources import (
    DEFAULT_SOURCES_FILE,
    Medium,
    SourceRegistry,
    pinyin_slug,
    resolve_source,
)


@pytest.fixture(scope="module")
def registry() -> SourceRegistry:
    return SourceRegistry.load()


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("21世纪经济报道 21财经APP", "21shijijingjibaodao 21caijingAPP"),
        ("安信国际证券(香港)", "anxinguojizhengquan(xianggang)"),
        ("36氪", "36ke"),
        ("荆州日报", "jingzhouribao"),
        ("Wind", "Wind"),
    ],
)
def test_pinyin_slug(name: str, slug: str) -> None:
    assert pinyin_slug(name) == slug


SEEDED = [
    ("荆州日报", "jingzhouribao"),
    ("上海证券报", "shanghaizhengquanbao"),
    ("证券时报", "zhengquanshibao"),
    ("中国证券报", "zhongguozhengquanbao"),
    ("21世纪经济报道 21财经APP", "21shijijingjibaodao 21caijingAPP"),
    ("36氪", "36ke"),
    ("Wind", "Wind"),
    ("第一财经", "diyicaijing"),
    ("财新网", "caixinwang"),
    ("经济参考报", "jingjicankaobao"),
    ("东方财富", "emnews"),
    ("湖南日报", "hunanribao"),
    ("安信国际证券(香港)", "anxinguojizhengquan(xianggang)"),
    ("新华社", "xinhuashe"),
    ("人民日报", "renminribao"),
    ("证券日报", "zhengquanribao"),
    ("财联社", "cailianshe"),
    ("每日经济新闻", "meirijingjixinwen"),
    ("经济观察报", "jingjiguanchabao"),
    ("中国基金报", "zhongguojijinbao"),
    ("华尔街见闻", "huaerjiejianwen"),
]


@pytest.mark.parametrize(("name", "slug"), SEEDED)
def test_seeded_media_are_found_by_name_and_slug(
    registry: SourceRegistry, name: str, slug: str
) -> None:
    assert registry.lookup(name) == registry.lookup(slug)
    medium = registry.lookup(name)
    assert medium is not None and (medium.name, medium.slug) == (name, slug)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("上证报", "上海证券报"),
        ("中证报", "中国证券报"),
        ("东财滚动", "东方财富"),
        ("东财", "东方财富"),
        ("东方财富网", "东方财富"),
    ],
)
def test_aliases(registry: SourceRegistry, alias: str, name: str) -> None:
    medium = registry.lookup(alias)
    assert medium is not None and medium.name == name


def test_lookup_ignores_width_case_and_spacing(registry: SourceRegistry) -> None:
    assert registry.lookup("安信国际证券（香港）") == registry.lookup("安信国际证券(香港)")
    assert registry.lookup("wind") == registry.lookup("Wind")
    assert registry.lookup(" 荆州日报 ") == registry.lookup("荆州日报")
    assert registry.lookup("没有这家媒体") is None
    assert registry.lookup("") is None


def test_extra_file_is_merged_over_the_bundled_one(tmp_path: Path) -> None:
    extra = tmp_path / "more.toml"
    extra.write_text(
        '[[medium]]\nname = "东方财富"\naliases = ["东财快讯"]\n\n'
        '[[medium]]\nname = "投资者网"\n\n'
        '[[medium]]\nname = "证券时报"\nslug = "stcn"\n',
        encoding="utf-8",
    )
    registry = SourceRegistry.load(extra)
    assert registry.lookup("东财快讯") == registry.lookup("东财滚动")  # aliases add up
    assert registry.lookup("东方财富") == Medium(
        "东方财富", "emnews", ("东财滚动", "东财", "东方财富网", "东财快讯")
    )  # no slug given: the bundled one stays
    assert registry.lookup("touzizhewang") == Medium("投资者网", "touzizhewang")
    assert registry.lookup("证券时报") == Medium("证券时报", "stcn", ("证券时报网",))  # a given slug wins
    assert len(registry) == len(SourceRegistry.load()) + 1


def test_load_without_the_bundled_file(tmp_path: Path) -> None:
    only = tmp_path / "only.toml"
    only.write_text('[[medium]]\nname = "界面新闻"\n', encoding="utf-8")
    registry = SourceRegistry.load(only, include_default=False)
    assert [medium.name for medium in registry] == ["界面新闻"]


@pytest.mark.parametrize(
    "content",
    ['[[medium]]\nslug = "x"\n', 'medium = "x"\n', '[[medium]]\nname = "x"\naliases = [1]\n'],
)
def test_bad_registry_file_is_reported(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.toml"):
        SourceRegistry.load(bad)


def test_bundled_file_has_every_slug_spelled_out() -> None:
    text = DEFAULT_SOURCES_FILE.read_text(encoding="utf-8")
    assert text.count("[[medium]]") == text.count("\nslug = ")


# --- order of trust ------------------------------------------------------------


def resolve(registry: SourceRegistry, **given: str | None) -> tuple[str, str] | None:
    fields: dict[str, str | None] = {
        "attribution": None,
        "share_medium": None,
        "tag": None,
        "category": None,
    }
    fields.update(given)
    return resolve_source(registry, **fields)


def test_attribution_comes_first(registry: SourceRegistry) -> None:
    got = resolve(
        registry,
        attribution="上海证券报",
        share_medium="证券时报",
        tag="东财滚动新闻",
        category="emnews",
    )
    assert got == ("上海证券报", "shanghaizhengquanbao")


def test_share_medium_before_tag(registry: SourceRegistry) -> None:
    got = resolve(registry, share_medium="中证报", tag="荆州日报新闻")
    assert got == ("中国证券报", "zhongguozhengquanbao")


def test_tag_without_its_news_suffix(registry: SourceRegistry) -> None:
    assert resolve(registry, tag="荆州日报新闻", category="x") == ("荆州日报", "jingzhouribao")


def test_rolling_news_tag_maps_to_eastmoney(registry: SourceRegistry) -> None:
    assert resolve(registry, tag="东财滚动新闻", category="emnews") == ("东方财富", "emnews")


def test_category_slug_last(registry: SourceRegistry) -> None:
    assert resolve(registry, category="jingzhouribao") == ("荆州日报", "jingzhouribao")
    assert resolve(registry, category="emnews") == ("东方财富", "emnews")


def test_unknown_name_stays_with_its_pinyin_slug(registry: SourceRegistry) -> None:
    assert resolve(registry, attribution="界面新闻") == ("界面新闻", "jiemianxinwen")
    assert resolve(registry, tag="蓝鲸财经新闻") == ("蓝鲸财经", pinyin_slug("蓝鲸财经"))


def test_unknown_category_slug_is_both_name_and_slug(registry: SourceRegistry) -> None:
    assert resolve(registry, category="lanjingcaijing") == (
        "lanjingcaijing",
        "lanjingcaijing",
    )


def test_blank_values_are_skipped(registry: SourceRegistry) -> None:
    got = resolve(registry, attribution=" ", share_medium="", tag="新闻", category="36ke")
    assert got == ("36氪", "36ke")


def test_nothing_at_all_gives_none(registry: SourceRegistry) -> None:
    assert resolve(registry) is None
