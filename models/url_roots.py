"""URL roots: the http(s) prefixes request media may be fetched from, and whether a URL is inside one."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import SplitResult, unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def url_root(text: str) -> str:
    """``text`` as a canonical URL root (scheme, lower-case host, explicit port, path ending in '/')."""
    parts = _parts(text)
    if parts is None:
        raise ValueError(f"{text!r} is not an http(s) URL with a host")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a URL root has no credentials, query or fragment")
    if _has_dot_segments(parts.path):
        raise ValueError(f"{text!r}: a URL root has no '.' or '..' path segments")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{_origin(parts)}{path}"


def under_url_roots(url: str, roots: Sequence[str]) -> bool:
    """Whether ``url`` is an http(s) URL inside one of ``roots`` (canonical, as ``url_root`` gives them)."""
    parts = _parts(url)
    if parts is None or parts.username is not None or _has_dot_segments(parts.path):
        return False
    location = f"{_origin(parts)}{parts.path or '/'}"
    return any(location.startswith(root) for root in roots)


def _parts(url: str) -> SplitResult | None:
    """The parts of an http(s) URL with a host and a valid port, else None."""
    if any(char.isspace() or ord(char) < 32 for char in url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return None
    return parts if parts.scheme in DEFAULT_PORTS and parts.hostname else None


def _origin(parts: SplitResult) -> str:
    """scheme://host:port with the default port made explicit."""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or DEFAULT_PORTS[parts.scheme]}"


def _has_dot_segments(path: str) -> bool:
    """Whether a URL path, percent-decoded, has '.' or '..' segments or backslashes."""
    decoded = unquote(path)
    return "\\" in decoded or any(segment in (".", "..") for segment in decoded.split("/"))
