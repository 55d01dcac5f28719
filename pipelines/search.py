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
FerretDB has no text index, so there the store keeps a word index of its own
(pipelines.word_index) whose scores are `term_score`'s, MongoDB's formula. A
phrase's candidates there are the records holding its words as every context
would segment them (`phrase_word_sets`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
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


# Characters the text around a phrase often holds (the commonest of the mirror's texts, a
# digit, a Latin letter), tried on either side of every phrase.
_CONTEXTS = ("的", "在", "是", "和", "了", "有", "年", "月", "日", "公", "司", "市", "场", "股", "业",
             "中", "国", "大", "发", "行", "上", "人", "为", "不", "增", "长", "亿", "元", "1", "a")
_LETTERS_OR_DIGITS = re.compile(r"[0-9a-z]+")
_BOUNDARY_SPAN = 3  # a dictionary word across the phrase's edge: up to 3 of its characters + 1


@functools.cache
def _common_han() -> tuple[str, ...]:
    """GB 2312's 3,755 level-1 characters: the common Chinese characters."""
    return tuple(bytes([high, low]).decode("gb2312") for high in range(0xB0, 0xD8)
                 for low in range(0xA1, 0xFF) if high < 0xD7 or low <= 0xF9)


def _edge_contexts(phrase: str) -> set[tuple[str, str]]:
    """(left, right) characters that would make a dictionary word with the phrase's edge:
    `道琼斯` for a phrase ending in `道琼`, `新一代` for one ending in `新一`."""
    has_word = _jieba().has_word
    starts = [phrase[:k] for k in range(1, _BOUNDARY_SPAN + 1) if len(phrase) >= k]
    ends = [phrase[-k:] for k in range(1, _BOUNDARY_SPAN + 1) if len(phrase) >= k]
    han = _common_han()
    contexts = {(c, "") for c in _CONTEXTS} | {("", c) for c in _CONTEXTS}
    for start in starts:  # map and compress: no Python frame per character (22,000 lookups)
        contexts.update((c, "") for c in itertools.compress(han, map(has_word, [c + start for c in han])))
    for end in ends:
        contexts.update(("", c) for c in itertools.compress(han, map(has_word, [end + c for c in han])))
    return contexts


def _inside_words(text: str, start: int, end: int, shortest: int = 2) -> frozenset[str]:
    """The stored tokens (as `segment` makes them, two characters or more) of the search-mode
    words of `text` that lie within [start, end): a phrase's words in a context. A Latin or
    digit run at an edge may be a run the phrase cut: not those."""
    found: set[str] = set()
    for word, first, last in _jieba().tokenize(text, mode="search"):
        if first < start or last > end:
            continue
        at_edge = first == start or last == end
        found.update(token for token in _TOKEN.findall(word.lower())
                     if len(token) >= shortest and not (at_edge and _LETTERS_OR_DIGITS.fullmatch(token)))
    return frozenset(found)


EdgeReadings = dict[frozenset[str], list[str]]  # a phrase's words in a context: those contexts


@functools.lru_cache(maxsize=1024)
def _edge_readings(phrase: str) -> tuple[frozenset[str], EdgeReadings, EdgeReadings]:
    """The phrase's words alone; its words with each context on the left, and on the right."""
    size = len(phrase)
    alone = _inside_words(phrase, 0, size)
    lefts: EdgeReadings = {alone: [""]}
    rights: EdgeReadings = {alone: [""]}
    for left, right in _edge_contexts(phrase):
        if left:
            lefts.setdefault(_inside_words(left + phrase, len(left), len(left) + size), []).append(left)
        else:
            rights.setdefault(_inside_words(phrase + right, 0, size), []).append(right)
    return alone, lefts, rights


@functools.lru_cache(maxsize=1024)
def phrase_word_sets(phrase: str) -> tuple[frozenset[str], ...] | None:
    """Sets of words, one of which every text holding `phrase` holds whole: how to find the
    phrase's candidates in the word index. None: some context leaves no word to look up (a
    scan finds the phrase then).

    Segmentation depends on context: a word at the phrase's edge may be cut (a phrase that
    starts inside a word: `互动平` -> `平`) or glued to the text around it, and that can
    change the words next to it (`新一` of `新一代`). So the phrase is segmented alone and
    with each character that would make a dictionary word with its edge (`道琼斯` for a
    phrase ending in `道琼`) or is among the commonest (`_edge_contexts`), on the left and on
    the right; each pair of a left and a right reading gives the words both keep (of two
    characters or more: one is a leftover of a cut, and selects little). What this misses
    is measured by bench/phrase_words.py (bench/RESULTS.md 21).
    """
    size = len(phrase)
    _, lefts, rights = _edge_readings(phrase)
    readings: set[frozenset[str]] = set()
    for left_words, left_contexts in lefts.items():
        for right_words, right_contexts in rights.items():
            if left_words & right_words:
                readings.add(left_words & right_words)
                continue
            # Both edges change it and no long word is left: the words, single characters
            # too, of the phrase between each pair of those contexts.
            readings |= {_inside_words(left + phrase + right, len(left), len(left) + size, 1)
                         for left in left_contexts for right in right_contexts}
    if not all(readings):
        return None
    return _weakest(readings)


def _weakest(sets: Iterable[frozenset[str]]) -> tuple[frozenset[str], ...]:
    """The sets no other set is a part of (holding one of those is holding one of all), sorted;
    without the words that are part of another word of their set (search mode stores
    `锂电` and `电池` wherever it stores `锂电池`: one word fewer to read, the same records)."""
    sets = {frozenset(word for word in words if not any(word in other and word != other for other in words))
            for words in sets}
    return tuple(sorted((words for words in sets if not any(other < words for other in sets)), key=sorted))


MAX_EDGE_CUTS = 3  # contexts an edge's condition may name (each adds a word to read: ~10 ms at 100,000)


@functools.lru_cache(maxsize=1024)
def phrase_edge_conditions(phrase: str) -> tuple[tuple[frozenset[str], ...], ...]:
    """More of what every text holding `phrase` holds, to narrow the candidates of
    `phrase_word_sets` (whose sets keep only what every pair of contexts keeps: `gdp` alone
    of `全年GDP增速`, which `安` on the left and `度` on the right cut to `安全 年 gdp 增 速度`).

    One condition per edge whose contexts cut words out of the phrase, in the form of
    `phrase_word_sets` (one of its sets held whole): the words that edge's contexts can cut
    (`全年`), or for each context that cuts them, those it keeps and the words it makes
    across the edge instead (`安全`, `完全`...). No condition for an edge with more than
    MAX_EDGE_CUTS such contexts (more words to read than they would spare) or with a context
    that makes no word across it, and none at all when both edges can cut the same word."""
    alone, lefts, rights = _edge_readings(phrase)
    cut_left = alone - frozenset.intersection(*lefts)
    cut_right = alone - frozenset.intersection(*rights)
    if cut_left & cut_right:
        return ()
    conditions = []
    for readings, cut, on_left in ((lefts, cut_left, True), (rights, cut_right, False)):
        cutting = [(words, context) for words, contexts in readings.items() if not words >= cut
                   for context in contexts]
        if not cut or len(cutting) > MAX_EDGE_CUTS:
            continue
        either = {cut} | {(words & cut) | (_across_words(context + phrase, len(context)) if on_left
                                           else _across_words(phrase + context, len(phrase)))
                          for words, context in cutting}
        if all(either):
            conditions.append(_weakest(either))
    return tuple(conditions)


def _across_words(text: str, at: int) -> frozenset[str]:
    """The stored tokens (two characters or more, not a Latin or digit run, which may go on)
    of the search-mode words of `text` that cross position `at`."""
    return frozenset(token for word, first, last in _jieba().tokenize(text, mode="search")
                     if first < at < last for token in _TOKEN.findall(word.lower())
                     if len(token) >= 2 and not _LETTERS_OR_DIGITS.fullmatch(token))


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


# The frequency of a word seen `n` times: the n-th occurrence adds 1/2^(n-1), summed in that
# order. After 54 occurrences the double no longer moves (it is 2.0), so the table stops there.
_FREQUENCIES = [0.0]
for _n in range(64):
    _FREQUENCIES.append(_FREQUENCIES[-1] + 0.5 ** _n)


def term_score(count: int, tokens: int, whole: bool, weight: float = 1.0) -> float:
    """One word's share of MongoDB's `textScore` in a field of `tokens` words where it occurs
    `count` times (`whole`: the field is that word alone).

    Its formula (FTSSpec::_scoreStringV2): the n-th occurrence adds 1/2^(n-1) to a
    frequency, scaled by 0.5 + 0.5 * count / tokens of the field, and by 1.1 when the
    whole field is that word."""
    freq = _FREQUENCIES[min(count, len(_FREQUENCIES) - 1)]
    coeff = 0.5 * count / tokens + 0.5
    return weight * freq * coeff * (1.1 if whole else 1.0)


def text_score(words: str, terms: Iterable[str], weight: float = 1.0) -> float:
    """MongoDB's `textScore` of a document whose text-indexed field is `words`: the sum of
    `term_score` over the query's terms, in the query's order (0.0 when it holds none)."""
    tokens = words.split()
    if not tokens:
        return 0.0
    wanted = list(dict.fromkeys(terms))
    wanted_set = set(wanted)
    counts = Counter(token for token in tokens if token in wanted_set)
    score = 0.0
    for term in wanted:
        if counts[term]:
            score += term_score(counts[term], len(tokens), words == term, weight)
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
                "indexes, e.g. FerretDB); `newscrawl query --text` reads the word index the "
                "store keeps (pipelines.word_index), ranked by MongoDB's text-score formula"]
    return []
