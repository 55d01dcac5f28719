"""Chinese word search: segmented words of a record, and the queries over them. Pure.

MongoDB's text index splits at spaces and punctuation only, so a Chinese text
is one "word" per run of characters. A record therefore carries `words`: its
title and text segmented by jieba's dictionary (rjieba, the Rust port; see
bench/RESULTS.md, "Word segmenters") and joined by single spaces, which the
text index (`words_text`, `default_language: "none"`) takes as they are.

Segmentation is jieba's search mode: a long word also yields its dictionary
sub-words (`上市公司` -> `上市`, `公司`, `上市公司`), so a word is found
whether the text's context glued it into a longer one or not. Tokens are cut
to runs of letters and digits and lowercased, which is what MongoDB's own
tokenizer would make of them (`12.3%` -> `12`, `3`): the server and
`text_score` below see the same words.

A query's words are segmented in precise mode (`央行降准` -> `央行`, `降准`);
a record matches when its `words` hold every one of them (`word_filter`, a
regex per word, exact on any server). On MongoDB `$text` over the same words
narrows the candidates through the index and ranks them (`textScore`);
FerretDB has no text index, so there the same regexes scan and `text_score`
ranks with MongoDB's formula.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import OperationFailure

WORDS_FIELD = "words"
TEXT_INDEX_NAME = "words_text"
_TOKEN = re.compile(r"[^\W_]+")  # letters and digits of any script: never one of MongoDB's delimiters
_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def _jieba() -> Any:
    """rjieba, imported at the first segmentation (its dictionary takes a while to load: a
    command that segments nothing, `newscrawl query --source …`, never pays for it)."""
    import rjieba

    return rjieba


# Runs of tokens separated by single spaces: `" ".join(_TOKEN_RUNS.findall(s))` is
# `" ".join(_TOKEN.findall(s))`, with one match per stretch between punctuation instead
# of one per word (the words field is built from a few dozen strings, not hundreds).
_TOKEN_RUNS = re.compile(r"[^\W_]+(?: [^\W_]+)*")


def segment(text: str) -> list[str]:
    """Search-mode words of `text`, lowercased letter/digit runs, in order, repeats kept."""
    return _TOKEN.findall(" ".join(_jieba().cut_for_search(text)).lower())


def _joined_segment(text: str) -> str:
    """`" ".join(segment(text))`, faster."""
    return " ".join(_TOKEN_RUNS.findall(" ".join(_jieba().cut_for_search(text)).lower()))


def search_words(title: str | None, text: str | None) -> str:
    """The `words` field: the title's words, then the text's, separated by single spaces."""
    title_words = _joined_segment(title) if title else ""
    text_words = _joined_segment(text) if text else ""
    if title_words and text_words:
        return title_words + " " + text_words
    return title_words or text_words


def query_terms(query: str | Iterable[str]) -> list[str]:
    """The words a query asks for (precise mode), each once, in order."""
    parts = [query] if isinstance(query, str) else list(query)
    seen: dict[str, None] = {}
    for part in parts:
        for word in _TOKEN.findall(" ".join(_jieba().cut(part)).lower()):
            seen.setdefault(word, None)
    return list(seen)


def regex_escape(text: str) -> str:
    """`text` as a literal in both PCRE (MongoDB) and RE2 (FerretDB): only metacharacters
    escaped (Python's re.escape also escapes spaces, which RE2 rejects)."""
    return _REGEX_SPECIAL.sub(r"\\\1", text)


def word_filter(terms: Sequence[str]) -> dict[str, Any]:
    """Records whose `words` hold every term as a whole word."""
    clauses = [{WORDS_FIELD: {"$regex": f"(?:^| ){regex_escape(term)}(?: |$)"}} for term in terms]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def phrase_filter(phrases: Sequence[str]) -> dict[str, Any]:
    """Records whose `text` holds every phrase exactly (case and punctuation included)."""
    clauses = [{"text": {"$regex": regex_escape(phrase)}} for phrase in phrases]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def text_score(words: str, terms: Iterable[str], weight: float = 1.0) -> float:
    """MongoDB's `textScore` of a document whose text-indexed field is `words`.

    Its formula (FTSSpec::_scoreStringV2): for each term of the field, the n-th
    occurrence adds 1/2^(n-1) to a frequency, scaled by 0.5 + 0.5 * count /
    tokens of the field (and by 1.1 when the whole field is that term); the
    document's score is the sum over the query's terms.
    """
    tokens = words.split()
    if not tokens:
        return 0.0
    wanted = set(terms)
    counts: dict[str, int] = {}
    freqs: dict[str, float] = {}
    for token in tokens:
        if token in wanted:
            count = counts.get(token, 0)
            counts[token] = count + 1
            freqs[token] = freqs.get(token, 0.0) + 1.0 / (2 ** count)
    score = 0.0
    for term, count in counts.items():
        coeff = 0.5 * count / len(tokens) + 0.5
        adjustment = 1.1 if words == term else 1.0
        score += weight * freqs[term] * coeff * adjustment
    return score


def annotate(record: dict[str, Any], stored: Mapping[str, Any] | None) -> bool:
    """Fill `record[words]` when its title or text changed (or it has none); True if filled."""
    if (stored is not None and WORDS_FIELD in stored and WORDS_FIELD in record
            and stored.get("title") == record.get("title") and stored.get("text") == record.get("text")):
        return False
    record[WORDS_FIELD] = search_words(record.get("title"), record.get("text"))
    return True


# --- the index (the one function here that talks to a server) -------------------------------

LEGACY_TEXT_INDEXES = ("title_text",)  # before `words`: a collection may hold one text index only


def ensure_text_index(articles: Collection[Any]) -> list[str]:
    """The `words_text` index; returns a warning when the server cannot have it (FerretDB)."""
    try:
        existing = articles.index_information()
        for name in LEGACY_TEXT_INDEXES:
            if name in existing:
                articles.drop_index(name)
        articles.create_index(
            [(WORDS_FIELD, "text")], name=TEXT_INDEX_NAME,
            default_language="none",  # no stemming, no stop words: the words as segmented
        )
    except OperationFailure as exc:
        return [f"text index on {WORDS_FIELD} not created ({exc.code}: the server lacks text "
                "indexes, e.g. FerretDB); `newscrawl query --text` scans with a regex per word "
                "and ranks with MongoDB's text-score formula in the client"]
    return []
