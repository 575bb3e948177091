"""Local X (Twitter) API v2 sandbox used by the demo, tests and benchmarks.

Run it with ``python -m outreach.sandbox.server --port 8765 --seed 42``.
Names are imported lazily so ``python -m outreach.sandbox.server`` does not warn.
"""
from __future__ import annotations

__all__ = ["SandboxState", "make_server", "serve", "start_in_thread"]


def __getattr__(name: str):
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
