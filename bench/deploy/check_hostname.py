"""``[core] hostname_callable`` for celery_check.py's workers: in Compose each worker is its own container with its
own hostname; here both run on one machine, so each is given the name its container would have."""
from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("OUTREACH_CHECK_HOSTNAME") or socket.getfqdn()
