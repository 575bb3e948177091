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

from outreach.inbound import CHANNEL

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
        from outreach.store.db import get_engine

        url = await self._database_url()
        engine = get_engine(url)
        loop = asyncio.get_running_loop()
        announced, announced_at, backoff = 0, 0.0, 1.0
        while True:
            listener = None
            try:
                listener = await asyncio.to_thread(_connect_and_listen, url, self.channel)
                wake = asyncio.Event()
                listener.watch(loop, wake)
                source = "start"
                while True:
                    n, max_id, age = await asyncio.to_thread(_pending, engine)
                    backoff = 1.0  # the database answers again
                    stale = n and time.monotonic() - announced_at >= self.refire_after and age >= self.refire_after
                    # a NOTIFY is news even when its signal's id is below one announced already (ids are taken
                    # at insert, transactions commit in any order); a poll wake needs a new id or a stale backlog
                    if n and (source == "notify" or max_id > announced or stale):
                        announced, announced_at = max(announced, max_id), time.monotonic()
                        log.info("inbound signals: %s unprocessed up to id %s (%s)", n, max_id, source)
                        yield TriggerEvent({"max_signal_id": max_id, "pending": n, "source": source})
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=self.poll_interval)
                        source = "notify"
                        await asyncio.sleep(self.debounce)  # let the burst land: one event for all of it
                    except asyncio.TimeoutError:
                        source = "poll"
                        # a half-open listener raises here, not silently; not watched meanwhile (one user at a time)
                        listener.unwatch(loop)
                        await asyncio.to_thread(listener.ping)
                        listener.watch(loop, wake)
                    wake.clear()
                    listener.drain()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - database gone: keep trying, polling resumes with it
                if listener is not None:
                    listener.close(loop)
                    listener = None
                log.warning("inbound listener: %s: %s; reconnecting in %.0fs", type(e).__name__, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            finally:
                if listener is not None:
                    listener.close(loop)

    @staticmethod
    async def _database_url() -> str:
        """The engine's database as configured; never the embedded fallback (a triggerer that started its own
        empty server would listen to nothing). Retried with backoff until it is configured."""
        from outreach.store.db import resolve_url

        backoff = 1.0
        while True:
            try:
                return await asyncio.to_thread(resolve_url, allow_embedded=False)
            except LookupError as e:
                log.error("inbound trigger: %s; retrying in %.0fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)


class _Listener:
    """A LISTENing psycopg2 connection watched by the event loop (no thread); remembers its fd, so the reader
    is removed even after the connection died (a closed connection has no fileno, and a new connection that
    reuses the number would otherwise never be watched)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.fd = conn.fileno()
        self.watched = False

    def watch(self, loop, wake: asyncio.Event) -> None:
        def readable() -> None:
            try:
                self.conn.poll()
            except Exception:  # noqa: BLE001 - broken: stop watching (no busy loop), wake so the next query raises
                self.unwatch(loop)
                wake.set()
                return
            if self.conn.notifies:
                self.conn.notifies.clear()
                wake.set()

        loop.add_reader(self.fd, readable)
        self.watched = True

    def unwatch(self, loop) -> None:
        if self.watched:
            self.watched = False
            try:
                loop.remove_reader(self.fd)
            except Exception:  # noqa: BLE001
                pass

    def drain(self) -> None:
        if self.conn.closed:
            raise ConnectionError("the LISTEN connection is closed")
        self.conn.poll()
        self.conn.notifies.clear()

    def ping(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1")

    def close(self, loop) -> None:
        self.unwatch(loop)
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


def _connect_and_listen(url: str, channel: str) -> _Listener:
    import psycopg2
    import sqlalchemy as sa

    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn, connect_timeout=10, keepalives=1, keepalives_idle=30, keepalives_interval=10,
                            keepalives_count=3)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {channel}")  # validated identifier
    except Exception:
        conn.close()
        raise
    return _Listener(conn)


def _pending(engine) -> tuple[int, int, float]:
    import sqlalchemy as sa

    with engine.connect() as c:
        n, max_id, age = c.execute(sa.text(PENDING_SQL)).one()
    return int(n or 0), int(max_id or 0), float(age or 0.0)
