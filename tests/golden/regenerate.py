"""The paragraph cleaner's golden outputs: `python -m tests.golden.regenerate` rewrites them.

tests/golden/cleaning/ holds what `clean_body` gives (its CleanedBody as JSON, one file per
input) for:
- corpus/NAME.json: the real post fixtures/corpus/NAME.md as Jekyll renders it (the
  command needs `jekyll`, as the mirror does);
- fragments/NAME.json: the hand-written fragment fragments/NAME.html, read as it is (an HTML
  comment in it, dropped by the cleaner, says where it comes from when that matters).

tests/test_cleaning_golden.py compares every output with its file. After a change of a rule,
run the command from the checkout's root, read `git diff tests/golden/` (each changed
paragraph, as the post means it: no markup, no attribution or link line, no paragraph lost)
and commit the outputs with the rule. A new fragment is a new .html file and a run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipelines.cleaning import clean_body
from tests.helpers import CORPUS_POSTS, PROJECT_ROOT, render_corpus_bodies

GOLDEN = Path(__file__).resolve().parent / "cleaning"
CORPUS_OUTPUTS = GOLDEN / "corpus"
FRAGMENTS = GOLDEN / "fragments"


def corpus_names() -> list[str]:
    """The real posts' file names (`2021-12-31-NW202112312232339262.md`)."""
    return sorted(path.name for path in CORPUS_POSTS.glob("*.md"))


def fragment_names() -> list[str]:
    return sorted(path.stem for path in FRAGMENTS.glob("*.html"))


def fragment_html(name: str) -> str:
    return (FRAGMENTS / f"{name}.html").read_bytes().decode("utf-8")  # CRLF kept as written


def corpus_output_path(post_name: str) -> Path:
    return CORPUS_OUTPUTS / f"{Path(post_name).stem}.json"


def fragment_output_path(name: str) -> Path:
    return FRAGMENTS / f"{name}.json"


def cleaned(source: str, body_html: str) -> dict[str, Any]:
    """The golden form of `clean_body(body_html)`: where the input is, then every field."""
    return {"input": source, **dataclasses.asdict(clean_body(body_html))}


def relative(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


def dumps(golden: dict[str, Any]) -> str:
    return json.dumps(golden, ensure_ascii=False, indent=2) + "\n"


def corpus_golden(name: str, body_html: str) -> dict[str, Any]:
    """What corpus/NAME.json holds, given the post's body as Jekyll renders it."""
    return cleaned(f"{relative(CORPUS_POSTS / name)} (rendered by Jekyll)", body_html)


def fragment_golden(name: str) -> dict[str, Any]:
    """What fragments/NAME.json holds."""
    return cleaned(relative(FRAGMENTS / f"{name}.html"), fragment_html(name))


def outputs(corpus_bodies: dict[str, str]) -> dict[Path, dict[str, Any]]:
    """Every golden file and what it must hold, given the rendered corpus bodies by post name."""
    found = {corpus_output_path(name): corpus_golden(name, corpus_bodies[name]) for name in corpus_names()}
    found.update({fragment_output_path(name): fragment_golden(name) for name in fragment_names()})
    return found


def golden_files() -> set[Path]:
    return set(CORPUS_OUTPUTS.glob("*.json")) | set(FRAGMENTS.glob("*.json"))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="golden-corpus-") as work:
        wanted = outputs(render_corpus_bodies(Path(work)))
    changed: list[str] = []
    for path in sorted(golden_files() - wanted.keys()):  # its input is gone
        path.unlink()
        changed.append(f"removed {relative(path)}")
    for path, golden in sorted(wanted.items()):
        text = dumps(golden)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(f"wrote {relative(path)}")
    for line in changed:
        print(line)
    print(f"{len(wanted)} golden outputs, {len(changed)} changed"
          + (": review them with `git diff tests/golden/`" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
