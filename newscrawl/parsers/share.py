"""The share host's JSON (`/NewsData/GetNewsText.do?id=NW…`).

Two generations are known: older answers carry the article HTML in
`content`, newer ones in `text`, sometimes with title, time and medium.
Anything else in the object is ignored (never stored: keys may hold `$`/`.`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from w3lib.encoding import http_content_type_encoding, read_bom

# Tried in order when the answer declares no charset (or a wrong one): JSON's own
# (UTF-8/16/32, by its first bytes), then GB18030, which holds GBK and GB2312.
DETECTED_ENCODINGS = ("gb18030",)


class ShareJSONError(ValueError):
    """The share host's answer is not the JSON object we know."""


@dataclass(frozen=True)
class ShareText:
    html: str | None
    title: str | None
    time: str | None
    medium: str | None


def _text(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


class ShareJSONV1:
    """Older answers: `{"content": HTML}`."""

    html_keys: tuple[str, ...] = ("content",)
    title_keys: tuple[str, ...] = ()
    time_keys: tuple[str, ...] = ()
    medium_keys: tuple[str, ...] = ()


class ShareJSONV2(ShareJSONV1):
    """Newer answers: `{"text": HTML, "title", "showtime", "medianame"}`, the extras optional."""

    html_keys = ("text", "content")
    title_keys = ("title", "Title")
    time_keys = ("showtime", "showTime", "time", "datetime")
    medium_keys = ("medianame", "mediaName", "from", "source")


def decode_share(body: bytes, content_type: str | bytes | None = None) -> str:
    """The answer's text: by its declared charset, else its BOM or JSON's own
    encodings, else GB18030 (the site's Chinese portals answer in GBK too)."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    declared = http_content_type_encoding(content_type) if content_type else None
    bom_encoding, bom = read_bom(body)
    candidates = [declared] if declared else []
    if bom_encoding:
        candidates.append(bom_encoding)
    candidates += [json.detect_encoding(body), *DETECTED_ENCODINGS]
    for encoding in candidates:
        try:
            if bom and encoding == bom_encoding:
                return body[len(bom):].decode(encoding)
            return body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    raise ShareJSONError(f"share answer is in no known encoding (declared {declared or 'none'})")


def parse_share_json(body: str | bytes, content_type: str | bytes | None = None) -> ShareText:
    text = body if isinstance(body, str) else decode_share(body, content_type)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ShareJSONError(f"share answer is not JSON: {exc}") from None
    except RecursionError:
        raise ShareJSONError("share answer is nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]  # some portals wrap the record
    if not isinstance(data, dict):
        raise ShareJSONError("share answer is not a JSON object")
    layout = ShareJSONV2 if "text" in data else ShareJSONV1
    return ShareText(
        html=_text(data, *layout.html_keys),
        title=_text(data, *layout.title_keys),
        time=_text(data, *layout.time_keys),
        medium=_text(data, *layout.medium_keys),
    )
