"""Placeholder until the workers land (stage 4)."""

from ..errors import PolicyError


def check_broker_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise PolicyError(f"--broker: expected redis://HOST:PORT/DB, got {url!r}")
