"""``InboundSignalTrigger``: wakes the ``outreach_reactions`` DAG when inbound signals arrive.

An event trigger (``BaseEventTrigger``) for an ``AssetWatcher``: it LISTENs on the PostgreSQL channel the webhook
receiver NOTIFYs (``outreach_inbound``, sent on commit of the signals), waits ``debounce`` seconds so a burst
becomes one event, and yields a ``TriggerEvent`` when there are unprocessed signals newer than the last ones it
announced. Every ``poll_interval`` seconds it also looks at the table without a notification (a NOTIFY is lost
while the listener is reconnecting, and signals from the polls raise none), and it re-announces unprocessed
signals still waiting after ``refire_after`` seconds (a reaction run that failed, or a deferred signal).

The trigger is a value object: its kwargs are plain settings; the database URL is resolved in the triggerer at
run time (``OUTREACH_DATABASE_URL``, else the Airflow connection ``outreach_db``), never stored in the trigger.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

CHANNEL = "outreach_inbound"
PENDING_SQL = ("SELECT count(*), max(id), extract(epoch FROM now() - min(received_at)) "
               "FROM inbound_signals WHERE processed_at IS NULL")
log = logging.getLogger(__name__)


class InboundSignalTrigger(BaseEventTrigger):
    def __init__(self, channel: str = CHANNEL, poll_interval: float = 30.0, debounce: float = 1.0,
                 refire_after: float = 300.0) -> None:
        super().__init__()
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", channel):
            raise ValueError(f"channel must be a lower-case SQL identifier, got {channel!r}")
        self.channel = channel
        self.poll_interval = float(poll_interval)
        self.debounce = float(debounce)
        self.refire_after = float(refire_after)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"channel": self.channel, "poll_interval": self.poll_interval, "debounce": self.debounce,
                 "refire_after": self.refire_after})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from outreach.store.db import get_engine, resolve_url

        url = await asyncio.to_thread(resolve_url)
        engine = get_engine(url)
        announced, announced_at, backoff = 0, 0.0, 1.0
        while True:
            listener = None
            try:
                listener, wake = await self._listen(url)
                loop = asyncio.get_running_loop()
                backoff = 1.0
                source = "start"
                while True:
                    n, max_id, age = await asyncio.to_thread(_pending, engine)
                    stale = n and time.monotonic() - announced_at >= self.refire_after and age >= self.refire_after
                    if n and (max_id > announced or stale):
                        announced, announced_at = max_id, time.monotonic()
                        log.info("inbound signals: %s unprocessed up to id %s (%s)", n, max_id, source)
                        yield TriggerEvent({"max_signal_id": max_id, "pending": n, "source": source})
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=self.poll_interval)
                        source = "notify"
                        await asyncio.sleep(self.debounce)  # let the burst land: one event for all of it
                    except asyncio.TimeoutError:
                        source = "poll"
                    wake.clear()
                    _drain(listener)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - database gone: keep trying, polling resumes with it
                log.warning("inbound listener: %s: %s; reconnecting in %.0fs", type(e).__name__, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            finally:
                if listener is not None:
                    _close(loop, listener)

    async def _listen(self, url: str):
        import psycopg2
        import sqlalchemy as sa

        dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncio.to_thread(psycopg2.connect, dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {self.channel}")  # validated identifier
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                conn.poll()
            except Exception:  # noqa: BLE001 - the connection broke: wake up; the next query raises
                wake.set()
                return
            if conn.notifies:
                conn.notifies.clear()
                wake.set()

        loop.add_reader(conn.fileno(), readable)
        return conn, wake


def _pending(engine) -> tuple[int, int, float]:
    import sqlalchemy as sa

    with engine.connect() as c:
        n, max_id, age = c.execute(sa.text(PENDING_SQL)).one()
    return int(n or 0), int(max_id or 0), float(age or 0.0)


def _drain(conn) -> None:
    conn.poll()
    conn.notifies.clear()


def _close(loop, conn) -> None:
    try:
        loop.remove_reader(conn.fileno())
    except Exception:  # noqa: BLE001
        pass
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass
