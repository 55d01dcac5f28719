"""The host map: real host names to the base URLs that serve them here.

Pure functions, so the mapping is tested without Scrapy; the downloader
middleware in newscrawl.components.middlewares applies them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit


class HostMapError(ValueError):
    """NEWSCRAWL_HOST_MAP is not a JSON object of host name to base URL."""


def parse_host_map(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """Read the setting: a JSON object (or a dict) from host name to base URL."""
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise HostMapError(f"NEWSCRAWL_HOST_MAP is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise HostMapError("NEWSCRAWL_HOST_MAP must be a JSON object {host: base_url}")
    host_map: dict[str, str] = {}
    for host, base in value.items():
        parts = urlsplit(str(base))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HostMapError(f"NEWSCRAWL_HOST_MAP[{host!r}]: {base!r} is not an http(s) URL")
        host_map[str(host).lower()] = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return host_map


def to_mirror(url: str, host_map: Mapping[str, str]) -> str | None:
    """The URL that serves `url` here, or None when its host is not mapped."""
    parts = urlsplit(url)
    base = host_map.get((parts.hostname or "").lower())
    if base is None:
        return None
    b = urlsplit(base)
    return urlunsplit((b.scheme, b.netloc, b.path + (parts.path or "/"), parts.query, ""))


def to_real(url: str, real_url: str, host_map: Mapping[str, str]) -> str:
    """Map a mirror URL (e.g. a redirect target) back to the real host of `real_url`'s map.

    Any mirror base in the map is recognised; other URLs are returned as they are.
    The map does not say a host's real scheme: `real_url`'s for its own host,
    https for another (a cross-host redirect on these sites has not been seen).
    """
    parts = urlsplit(url)
    for host, base in host_map.items():
        b = urlsplit(base)
        if parts.netloc == b.netloc and parts.path.startswith(b.path):
            scheme = urlsplit(real_url).scheme if urlsplit(real_url).hostname == host else "https"
            path = parts.path[len(b.path):] or "/"
            return urlunsplit((scheme, host, path, parts.query, parts.fragment))
    return url
