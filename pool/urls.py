"""Service URLs that may carry a password (Redis, PostgreSQL): shown only with it masked."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """The URL with its user and password replaced by `***`, for messages, logs and pages."""
    if "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def scrub(message: str, url: str) -> str:
    """A library's message without the URL's credentials, should it quote them (or the URL)."""
    message = message.replace(url, mask_url(url))
    try:
        parts = urlsplit(url)
        secrets = (parts.password, parts.username)
    except ValueError:
        return message
    for secret in secrets:
        if secret and len(secret) > 2:
            message = message.replace(secret, "***")
    return message


def check_service_url(url: str, schemes: tuple[str, ...], example: str, *, host: tuple[str, ...] = ()) -> str:
    """A service URL as given, or ValueError naming what is wrong (its credentials masked); the
    schemes in `host` must name a host (others may reach a local socket)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a URL like {example}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"not a URL like {example} (the scheme must be {', '.join(schemes)})")
    if not parts.hostname and parts.scheme in host:
        raise ValueError(f"names no host: use a URL like {example}")
    del port  # read only to check it
    return url
