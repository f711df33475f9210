"""Is the Hugging Face Hub usable? Answered at once, so offline runs fail fast instead of retrying for 30 s."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


def offline() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set to a true value."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@functools.cache
def unreachable_reason() -> str | None:
    """None if the hub endpoint accepts a TCP connection within 3 s, else why not."""
    if offline():
        return "the hub is offline (HF_HUB_OFFLINE=1)"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
        return None
    except OSError as e:
        return f"cannot reach {url.hostname} ({e.strerror or type(e).__name__})"
