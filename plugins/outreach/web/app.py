"""The outreach dashboard: a FastAPI app of server-rendered pages with inline SVG charts.

Mounted in the Airflow UI by ``plugins/outreach_plugin.py`` (at ``/outreach``, with a menu entry), or served on
its own: ``python -m outreach.web --port 8090``. Pages:

- ``/``                      sequences: totals, reply rate per sequence
- ``/sequences/{name}``      funnel, conversion per step and per variant, replies and sends over time, time to
                             reply, failures by reason (``?days=N``: the last N days only)
- ``/accounts``              sender-account health: sends against every limit window, 429s and rate blocks,
                             blocked until, failures and the failure rate the automatic pause judges
- ``/review``                leads awaiting review (NEEDS_REVIEW), ``?sequence=NAME``
- ``/leads/{id}``            one enrollment's timeline (its events)
- ``/inbound``               webhook deliveries (accepted, refused by reason) and the unprocessed-signal backlog
- ``/api/sequences/{name}``, ``/api/accounts``: the same numbers as JSON
- ``/healthz``
- ``/webhooks/{x,linkedin,xmtp,email}``: the signed webhook receiver of the fast path (``web/webhooks.py``)

``?now=ISO8601`` sets the clock the rolling windows and charts are read at (the engine clock of a simulation);
real time by default. The database is ``outreach.store.db.get_engine()``, resolved at the first request.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from outreach.engine import metrics
from outreach.web import queries, svg
from outreach.web.templates import ICON, environment

FUNNEL_COLUMNS = [("ENROLLED", "enrolled"), ("ATTEMPTED", "attempted"), ("SENT", "sent"), ("FAILED", "failed"),
                  ("SKIPPED", "skipped"), ("DEFERRED", "deferred"), ("DELIVERED", "delivered"), ("READ", "read"),
                  ("REPLIED", "replied"), ("POSITIVE", "positive"), ("FOLLOWED_BACK", "follow-backs"),
                  ("CONNECTION_ACCEPTED", "accepted"), ("UNSUBSCRIBED", "unsubscribes"),
                  ("RECONCILED", "reconciled"), ("NEEDS_REVIEW", "review")]
ALWAYS = {"ENROLLED", "ATTEMPTED", "SENT", "FAILED", "REPLIED", "POSITIVE"}
CARDS = [("enrolled", "ENROLLED"), ("sent", "SENT"), ("replied", "REPLIED"), ("positive replies", "POSITIVE"),
         ("follow-backs", "FOLLOWED_BACK"), ("failed", "FAILED"), ("unsubscribes", "UNSUBSCRIBED")]
BIGINT = 2**63 - 1

Now = Annotated[datetime | None, Query(description="clock for rolling windows and charts (ISO 8601)")]


def create_app(engine: sa.Engine | None = None) -> FastAPI:
    app = FastAPI(title="Outreach dashboard", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.engine = engine
    env = environment()

    def db() -> sa.Engine:
        if app.state.engine is None:
            from outreach.store.db import get_engine

            app.state.engine = get_engine()
        return app.state.engine

    # RFC 8058 one-click unsubscribe (the List-Unsubscribe URL of our emails points here)
    from outreach.web import unsubscribe

    app.include_router(unsubscribe.router(db))
    # signed webhooks of X, the LinkedIn/XMTP gateways and inbound email: the event-driven fast path
    from outreach.web import webhooks

    app.include_router(webhooks.router(db))

    def page(name: str, root: str, status: int = 200, **ctx) -> HTMLResponse:
        html = env.get_template(name).render(root=root, **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def clock(now: datetime | None) -> datetime:
        from outreach.clock import parse_now

        return parse_now(now)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/")

    def error_root(request: Request) -> str:
        path = request.url.path[len(request.scope.get("root_path", "")):] or "/"
        return "../" * (path.count("/") - 1) or "./"

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return page("error", error_root(request), status=exc.status_code, title=str(exc.status_code),
                    code=exc.status_code, detail=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        if wants_json(request):
            return JSONResponse({"detail": errors}, status_code=422)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return page("error", error_root(request), status=422, title="422", code=422, detail=detail)

    # ------------------------------------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse)
    def index(now: Now = None):
        with db().connect() as conn:
            seqs = queries.overview(conn)
            anchor = queries.anchor_day(conn, clock(now))
        chart = svg.hbars("reply-rate", "reply rate per sequence (% of sent)",
                          [(s["name"], s["reply_rate"] or 0, f"{_pct(s['reply_rate'])} of {s['sent']:,} sent")
                           for s in seqs if s["sent"]], max_value=None)
        return page("index", "./", title="Sequences", sequences=seqs, anchor=anchor, rate_chart=chart)

    @app.get("/sequences/{name:path}", response_class=HTMLResponse)
    def sequence_page(name: str, now: Now = None,
                      days: Annotated[int | None, Query(ge=1, le=3650, description="only the last N days")] = None):
        with db().connect() as conn:
            seq = _sequence_or_404(conn, name)
            d = queries.sequence_detail(conn, seq, clock(now), days)
        totals: dict[str, int] = {}
        for r in d["funnel"]:
            for key in ("ENROLLED", "SENT", "REPLIED", "POSITIVE", "FOLLOWED_BACK", "FAILED", "UNSUBSCRIBED"):
                totals[key] = totals.get(key, 0) + int(r.get(key, 0))
        top = max([int(r.get("ENROLLED", 0)) for r in d["funnel"]] + [int(r.get("SENT", 0)) for r in d["funnel"]]
                  + [1])
        funnel_rows = []
        for r in d["funnel"]:
            if r.get("ENROLLED"):
                funnel_rows.append((f"{r['step']}: enrolled", r["ENROLLED"], f"{r['ENROLLED']:,}", "#94a3b8"))
            funnel_rows.append((f"{r['step']}: sent", r.get("SENT", 0),
                                f"{r.get('SENT', 0):,} sent · {_pct(r['conversion'])} conv", "#2563eb"))
            answered = sum(int(r.get(k, 0)) for k in metrics.RESPONSE_SIGNALS)
            if answered or r.get("SENT"):
                funnel_rows.append((f"{r['step']}: answered", answered,
                                    f"{answered:,} · {_pct(r['response_rate'])} · {r.get('POSITIVE', 0):,} positive",
                                    "#16a34a"))
        funnel_chart = svg.hbars("funnel", f"funnel of {seq.name}", funnel_rows, max_value=top, width=860,
                                 label_w=180, text_w=260)
        edges_chart = svg.hbars("conversion", "step-to-step conversion (%)",
                                [(f"{e['from']} → {e['to']} ({e['trigger']})", e["conversion"] or 0,
                                  _pct(e["conversion"])) for e in d["edges"]], max_value=100, width=860,
                                label_w=320, text_w=80)
        variant_chart = svg.hbars("variants", "positive reply rate per variant (%)",
                                  [(f"{v['step']}/{v['variant']}", v["positive_rate"] or 0,
                                    f"{_pct(v['positive_rate'])} positive · {_pct(v['reply_rate'])} replied of "
                                    f"{v['sent']:,}") for v in d["variants"]], width=860, label_w=200, text_w=300)
        s = d["series"]
        replies_chart = svg.columns(
            "replies", "replies per day", d["chart_days"],
            [("positive", s["REPLIED:positive"]),
             ("other replies", {k: v - s["REPLIED:positive"].get(k, 0) - s["REPLIED:unsubscribe"].get(k, 0)
                                for k, v in s["REPLIED"].items()}),
             ("unsubscribe", s["REPLIED:unsubscribe"])], colors=("#16a34a", "#60a5fa", "#dc2626"))
        sends_chart = svg.columns("sends", "sends per day", d["chart_days"], [("sent", s["SENT"])])
        latency_chart = svg.histogram("time-to-reply", "time to reply (replies per bucket)",
                                      [(metrics.bucket_label(lo), n) for lo, n in d["reply_buckets"].items()])
        columns = [(k, label) for k, label in FUNNEL_COLUMNS  # optional columns only when some step has them
                   if k in ALWAYS or any(r.get(k) for r in d["funnel"])]
        return page("sequence", "../", title=seq.name, seq=seq, d=d, columns=columns, cards=CARDS,
                    totals=totals, funnel_chart=funnel_chart, edges_chart=edges_chart, variant_chart=variant_chart,
                    replies_chart=replies_chart, sends_chart=sends_chart, latency_chart=latency_chart)

    @app.get("/accounts", response_class=HTMLResponse)
    def accounts_page(now: Now = None,
                      window: Annotated[int, Query(ge=1, le=10000, description="failure-rate window")] = 50):
        t = clock(now)
        with db().connect() as conn:
            h = queries.accounts_health(conn, t, window=window)
        for a in h["accounts"]:
            for lim in a["limits"]:
                lim["meter"] = svg.meter("limit", f"{a['name']} {lim['action_type']} {lim['window']}",
                                         lim["used"], lim["limit"])
            a["chart"] = svg.columns("account-days", f"{a['name']}: sends and failures per day", h["chart_days"],
                                     [("sent", a["per_day"].get("SENT", {})),
                                      ("failed", a["per_day"].get("FAILED", {})),
                                      ("released on 429", a["per_day"].get("DEFERRED:rate_limited", {}))],
                                     colors=("#2563eb", "#dc2626", "#f59e0b"), stacked=False, height=150)
        return page("accounts", "./", title="Accounts", h=h, now=t.strftime("%Y-%m-%d %H:%M UTC"))

    @app.get("/review", response_class=HTMLResponse)
    def review_page(sequence: Annotated[str | None, Query(max_length=500)] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10**7)] = 0):
        with db().connect() as conn:
            seq_id = _sequence_or_404(conn, sequence).id if sequence else None
            total, rows = queries.review(conn, seq_id, limit, offset)
        more = urlencode({k: v for k, v in (("sequence", sequence), ("limit", limit), ("offset", offset + limit))
                          if v is not None}) if offset + limit < total else ""
        return page("review", "./", title="Review", rows=rows, total=total, seq=sequence, more=more, limit=limit)

    @app.get("/leads/{enrollment_id}", response_class=HTMLResponse)
    def lead_page(enrollment_id: Annotated[int, Path(ge=1, le=BIGINT)]):
        with db().connect() as conn:
            lead = queries.lead(conn, enrollment_id)
        if lead is None:
            raise HTTPException(404, f"no enrollment with id {enrollment_id}")
        return page("lead", "../", title=f"Lead #{enrollment_id}", lead=lead,
                    shown=("text", "intent", "next", "fired", "until", "detail", "action", "timezone", "text_len"))

    # ------------------------------------------------------------------------------------------------- JSON
    @app.get("/api/sequences/{name:path}")
    def sequence_json(name: str, now: Now = None,
                      days: Annotated[int | None, Query(ge=1, le=3650)] = None):
        with db().connect() as conn:
            seq = _sequence_or_404(conn, name)
            d = queries.sequence_detail(conn, seq, clock(now), days)
        return _jsonable({"sequence": seq.name, "status": seq.status, "version": seq.version,
                          "since": d["since"], "anchor": d["anchor"], "funnel": d["funnel"], "edges": d["edges"],
                          "variants": d["variants"], "latency": d["latency"], "reasons": d["reasons"],
                          "reply_buckets": d["reply_buckets"], "review": d["review"]})

    @app.get("/inbound", response_class=HTMLResponse)
    def inbound_page(now: Now = None, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24):
        t = clock(now)
        with db().connect() as conn:
            i = queries.inbound(conn, t, hours=hours)
        return page("inbound", "./", title="Inbound", i=i, now=t.strftime("%Y-%m-%d %H:%M UTC"))

    @app.get("/api/inbound")
    def inbound_json(now: Now = None, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24):
        with db().connect() as conn:
            return _jsonable(queries.inbound(conn, clock(now), hours=hours))

    @app.get("/api/accounts")
    def accounts_json(now: Now = None, window: Annotated[int, Query(ge=1, le=10000)] = 50):
        with db().connect() as conn:
            h = queries.accounts_health(conn, clock(now), window=window)
        for a in h["accounts"]:
            a.pop("per_day", None)
            a["alerts"] = [{"occurred_at": r.occurred_at, "reason": r.reason, "data": r.data} for r in a["alerts"]]
        return _jsonable(h)

    @app.get("/healthz")
    def healthz():
        with db().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"ok": True}

    @app.get("/icon.svg")
    def icon():
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    return app


def _sequence_or_404(conn: sa.Connection, name: str):
    seq = queries.sequence(conn, name)
    if seq is None:
        raise HTTPException(404, f"no sequence named {name!r}")
    return seq


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    return obj
