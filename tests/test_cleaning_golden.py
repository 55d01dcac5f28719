"""Golden outputs of the paragraph cleaner (tests/golden/cleaning/): `clean_body` of the real
corpus posts as Jekyll renders them and of hand-written hostile fragments, compared with the
reviewed JSON files. A rule change rewrites them with `python -m tests.golden.regenerate`
and is reviewed as `git diff tests/golden/` (tests/golden/regenerate.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.golden.regenerate import (
    GOLDEN,
    corpus_golden,
    corpus_names,
    corpus_output_path,
    dumps,
    fragment_golden,
    fragment_names,
    fragment_output_path,
    golden_files,
    relative,
)
from tests.helpers import render_corpus_bodies

REGENERATE = "run python -m tests.golden.regenerate, then review git diff tests/golden/"
# Markup kept as a paragraph's text: an ASCII-named tag, opening or closing.
MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")

# Markup kept as a paragraph's text on purpose, by golden file: none. (Kramdown prints an
# attribution paragraph as text after an HTML comment on its line; the cleaner names its
# medium and drops it: fragments/kramdown_printed_attribution, tests/test_markup_as_text.py.)
KNOWN_MARKUP_LEAKS: set[tuple[str, str]] = set()


def load(path: Path) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return golden


def key(path: Path) -> str:
    return path.relative_to(GOLDEN).as_posix()


def assert_matches_golden(path: Path, actual: dict[str, Any]) -> None:
    assert path.exists(), f"{relative(path)} is missing: {REGENERATE}"
    assert actual == load(path), f"clean_body's output differs from {relative(path)}: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == dumps(actual), f"{relative(path)}: {REGENERATE}"


@pytest.mark.parametrize("name", fragment_names())
def test_fragment_cleans_to_its_golden_output(name: str) -> None:
    assert_matches_golden(fragment_output_path(name), fragment_golden(name))


@pytest.fixture(scope="module")
def corpus_bodies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return render_corpus_bodies(tmp_path_factory.mktemp("corpus-site"))


@pytest.mark.integration
@pytest.mark.parametrize("name", corpus_names())
def test_corpus_post_cleans_to_its_golden_output(name: str, corpus_bodies: dict[str, str]) -> None:
    assert_matches_golden(corpus_output_path(name), corpus_golden(name, corpus_bodies[name]))


def test_every_input_has_a_golden_output_and_every_output_an_input() -> None:
    assert len(corpus_names()) == 4 and len(fragment_names()) >= 30
    inputs = ({corpus_output_path(name) for name in corpus_names()}
              | {fragment_output_path(name) for name in fragment_names()})
    assert sorted(map(key, golden_files())) == sorted(map(key, inputs)), REGENERATE


def test_golden_outputs_are_clean_text() -> None:
    """What every output must be whatever the rules: the fields of a CleanedBody, normalised
    non-empty one-line paragraphs, no attribution or back-link line left."""
    known = {path for path, _ in KNOWN_MARKUP_LEAKS}
    for path in sorted(golden_files()):
        golden = load(path)
        assert list(golden) == ["input", "paragraphs", "attribution", "share_url", "origin_url", "quoted"]
        for paragraph in golden["paragraphs"]:
            assert paragraph and paragraph == paragraph.strip(), key(path)
            assert "  " not in paragraph and "\n" not in paragraph, key(path)
            assert "返回首页" not in paragraph, key(path)
            assert "文章来源" not in paragraph or key(path) in known, key(path)


def test_no_golden_paragraph_holds_markup() -> None:
    leaks = {(key(path), paragraph) for path in golden_files() for paragraph in load(path)["paragraphs"]
             if MARKUP.search(paragraph)}
    assert leaks == KNOWN_MARKUP_LEAKS
