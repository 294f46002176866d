"""What the store keeps of an LLM endpoint's URL: its host and port, never credentials or path."""

from __future__ import annotations

from urllib.parse import urlsplit


def endpoint_host(url: str | None) -> str | None:
    """``host[:port]`` of an endpoint URL (with or without a scheme): no credentials, path or query."""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host or None
