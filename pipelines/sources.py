"""Which medium published an article (record contract, "Source, in order of trust").

The media themselves live in a data file, `pipelines/data/sources.toml`,
so a new medium or alias needs no code; more files can be merged over it.
"""

from __future__ import annotations

import importlib.resources
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

# Through importlib.resources: inside a zipped egg (scrapyd) there is no file path.
DEFAULT_SOURCES_FILE: Traversable = importlib.resources.files("pipelines") / "data" / "sources.toml"
_TAG_SUFFIX = "新闻"  # tags are `<medium>新闻`


@dataclass(frozen=True)
class Medium:
    name: str  # canonical name, stored as `source`
    slug: str  # stored as `source_slug`
    aliases: tuple[str, ...] = ()


@lru_cache(maxsize=8192)
def pinyin_slug(name: str) -> str:
    """The aggregator's slug for a medium name: its pinyin with no separators,
    anything that is not Han kept as it is (`36氪` -> `36ke`)."""
    import pypinyin  # its dictionaries take a while to load: only a medium with no slug needs it

    return "".join(pypinyin.lazy_pinyin(name))


def _lookup_key(name: str) -> str:
    # NFKC makes full-width brackets, letters and digits half-width, so
    # `安信国际证券（香港）` finds `安信国际证券(香港)`; casefold for `wind`/`Wind`.
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


@dataclass(frozen=True)
class _Entry:
    """A `[[medium]]` table as written: the slug may be left out."""

    name: str
    slug: str | None
    aliases: tuple[str, ...]


def _entries_from_toml(path: Path | Traversable) -> list[_Entry]:
    with path.open("rb") as file:
        data = tomllib.load(file)
    entries: Any = data.get("medium", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: `medium` must be an array of tables ([[medium]])")
    media: list[_Entry] = []
    for position, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{path}: medium #{position} has no name")
        slug = entry.get("slug")
        aliases = entry.get("aliases", [])
        if not isinstance(slug, str | None) or not isinstance(aliases, list):
            raise ValueError(f"{path}: medium {name!r}: slug must be a string, aliases a list")
        if not all(isinstance(alias, str) for alias in aliases):
            raise ValueError(f"{path}: medium {name!r}: aliases must be strings")
        slug = slug.strip() if slug else None
        media.append(
            _Entry(name.strip(), slug or None, tuple(a.strip() for a in aliases if a.strip()))
        )
    return media


class SourceRegistry:
    """Known media, found by name, alias or slug."""

    def __init__(self, media: Iterable[Medium] = ()) -> None:
        self._media: dict[str, Medium] = {}  # by canonical name, in load order
        self._index: dict[str, Medium] = {}
        for medium in media:
            self._add(_Entry(medium.name, medium.slug, medium.aliases))
        self._reindex()

    @classmethod
    def load(cls, *paths: str | Path, include_default: bool = True) -> SourceRegistry:
        """The bundled registry (unless `include_default` is False) with the
        given TOML files merged over it, later files winning."""
        files: list[Path | Traversable] = [DEFAULT_SOURCES_FILE] if include_default else []
        files.extend(Path(path) for path in paths)
        registry = cls()
        for file in files:
            for entry in _entries_from_toml(file):
                registry._add(entry)
        registry._reindex()
        return registry

    def _add(self, entry: _Entry) -> None:
        known = self._media.get(entry.name)
        if known is None:
            slug = entry.slug or pinyin_slug(entry.name)
            self._media[entry.name] = Medium(entry.name, slug, entry.aliases)
            return
        # a later file refines a medium: a slug it gives wins, the aliases add up
        aliases = tuple(dict.fromkeys(known.aliases + entry.aliases))
        self._media[entry.name] = Medium(entry.name, entry.slug or known.slug, aliases)

    def _reindex(self) -> None:
        # Names beat slugs beat aliases when two media claim the same key.
        index: dict[str, Medium] = {}
        for medium in self._media.values():
            for alias in medium.aliases:
                index[_lookup_key(alias)] = medium
        for medium in self._media.values():
            index[_lookup_key(medium.slug)] = medium
        for medium in self._media.values():
            index[_lookup_key(medium.name)] = medium
        self._index = index

    def lookup(self, name_or_alias_or_slug: str) -> Medium | None:
        if not name_or_alias_or_slug:
            return None
        return self._index.get(_lookup_key(name_or_alias_or_slug))

    def __iter__(self) -> Iterator[Medium]:
        return iter(self._media.values())

    def __len__(self) -> int:
        return len(self._media)


def _tag_medium(tag: str | None) -> str | None:
    if not tag:
        return None
    # a bare `新闻` names no medium
    return tag.strip().removesuffix(_TAG_SUFFIX).strip() or None


def resolve_source(
    registry: SourceRegistry,
    *,
    attribution: str | None,
    share_medium: str | None,
    tag: str | None,
    category: str | None,
) -> tuple[str, str] | None:
    """(source, source_slug) by the contract's order of trust, None when
    nothing names a medium.

    Attribution, share medium and tag give a name: a known one becomes its
    canonical name and slug, an unknown one stays with its pinyin as slug.
    The category gives a slug: unknown, it stands for both name and slug (the
    pinyin cannot be turned back into the name, and the slug is the pinyin of
    itself, so the pair stays consistent).
    """
    for name in (attribution, share_medium, _tag_medium(tag)):
        name = " ".join(name.split()) if name else None
        if name:
            medium = registry.lookup(name)
            return (medium.name, medium.slug) if medium else (name, pinyin_slug(name))
    category = category.strip() if category else None
    if category:
        medium = registry.lookup(category)
        return (medium.name, medium.slug) if medium else (category, category)
    return None
