"""The dashboard's pages through FastAPI's TestClient against a seeded database: every page renders, its
numbers are the rollup's, bad input is refused (404 / 422)."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from outreach.engine import metrics
from outreach.web.app import create_app

SEQ = "founders-follow-dm"


@pytest.fixture(scope="module")
def client(seeded):
    engine, _ = seeded
    with TestClient(create_app(engine)) as c:
        yield c


def rollup_sum(engine, metric: str, step: str | None = None) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text("""
            SELECT coalesce(sum(value), 0) FROM metrics_daily m JOIN sequences s ON s.id = m.sequence_id
            WHERE s.name = :s AND m.metric = :m AND (CAST(:st AS text) IS NULL OR m.step = :st)"""),
            {"s": SEQ, "m": metric, "st": step}).scalar())


def cell(html: str, step: str, metric: str) -> str:
    row = re.search(rf'<tr data-step="{step}">(.*?)</tr>', html, re.S).group(1)
    return re.search(rf'data-metric="{metric}">([^<]*)<', row).group(1).strip()


def test_index_lists_the_sequence_with_its_totals(client, seeded):
    engine, _ = seeded
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f'data-sequence="{SEQ}"' in r.text and f'href="./sequences/{SEQ}"' in r.text
    assert 'data-chart="reply-rate"' in r.text
    assert f"{rollup_sum(engine, 'SENT'):,}" in r.text


def test_sequence_page_funnel_matches_the_rollup(client, seeded):
    engine, _ = seeded
    r = client.get(f"/sequences/{SEQ}")
    assert r.status_code == 200
    html = r.text
    for chart in ("funnel", "conversion", "variants", "replies", "sends", "time-to-reply"):
        assert f'data-chart="{chart}"' in html, chart
    assert "<rect" in html.split('data-chart="funnel"')[1].split("</svg>")[0]
    for step in ("follow", "dm_warm", "dm_cold"):
        for metric in ("SENT", "ATTEMPTED", "REPLIED", "FOLLOWED_BACK"):
            assert cell(html, step, metric) == f"{rollup_sum(engine, metric, step):,}", (step, metric)
    assert cell(html, "follow", "ENROLLED") == "24"
    assert rollup_sum(engine, "REPLIED") > 0 and rollup_sum(engine, "FOLLOWED_BACK") > 0
    # steps in graph order: the start step first
    assert html.index('data-step="follow"') < html.index('data-step="dm_warm"')
    assert 'href="../review?sequence=' in html  # relative links work at / and under /outreach/


def test_sequence_json_has_conversion_variants_and_latency(client, seeded):
    engine, _ = seeded
    d = client.get(f"/api/sequences/{SEQ}").json()
    funnel = {r["step"]: r for r in d["funnel"]}
    assert funnel["follow"]["SENT"] == rollup_sum(engine, "SENT", "follow")
    assert funnel["follow"]["conversion"] == 100.0  # every enrolled lead was followed
    warm = funnel["dm_warm"]
    assert warm["conversion"] == round(100 * warm["SENT"] / funnel["follow"]["SENT"], 1)
    assert warm["REPLIED"] and warm["reply_p50_s"] is not None and warm["reply_p50_s"] >= 0
    assert {v["variant"] for v in d["variants"]} == {"short", "control"}
    assert sum(v["sent"] for v in d["variants"]) == warm["SENT"]
    replied = next(x for x in d["latency"] if x["signal"] == "REPLIED")
    assert replied["count"] == sum(d["reply_buckets"].values()) == rollup_sum(engine, "REPLIED")
    assert any(e["from"] == "follow" and e["to"] == "dm_warm" for e in d["edges"])
    assert {"kind": "FAILED", "reason": "not_found", "count": 1} in d["reasons"]
    assert d["review"] == 2
    # ?days narrows the window (the last day only holds the seeded review and failure events)
    last = client.get(f"/api/sequences/{SEQ}", params={"days": 1, "now": "2026-01-08T12:00:00Z"}).json()
    assert last["since"] == "2026-01-08" and sum(r.get("SENT", 0) for r in last["funnel"]) < warm["SENT"] + 24


def test_accounts_page_shows_limits_blocks_and_failure_rate(client, seeded):
    engine, info = seeded
    r = client.get("/accounts", params={"now": info["now"]})
    assert r.status_code == 200
    assert 'data-account="x-main"' in r.text and 'data-chart="limit"' in r.text
    assert 'data-chart="account-days"' in r.text
    h = client.get("/api/accounts", params={"now": info["now"]}).json()
    acc = h["accounts"][0]
    assert acc["name"] == "x-main" and acc["status"] == "ACTIVE"
    windows = {(x["action_type"], x["window"]): x for x in acc["limits"]}
    assert windows[("SEND_TWITTER_DM", "per_day")]["limit"] == 900  # 1,000/day at 90% headroom
    assert acc["failure"]["failed"] == 1 and acc["failure"]["attempted"] > 0


def test_review_page_lists_needs_review_leads(client, seeded):
    _, info = seeded
    r = client.get("/review")
    assert r.status_code == 200
    for eid in info["review"]:
        assert f'data-enrollment="{eid}"' in r.text and f'href="./leads/{eid}"' in r.text
    assert client.get("/review", params={"sequence": SEQ, "limit": 1}).text.count("data-enrollment=") == 1
    assert "next 1" in client.get("/review", params={"sequence": SEQ, "limit": 1}).text


def test_lead_timeline(client, seeded):
    engine, info = seeded
    eid = info["review"][0]
    r = client.get(f"/leads/{eid}")
    assert r.status_code == 200
    kinds = re.findall(r'<tr data-kind="([A-Z_]+)">', r.text)
    with engine.connect() as c:
        expected = [k for (k,) in c.execute(sa.text("SELECT kind FROM events WHERE enrollment_id = :e ORDER BY id"),
                                            {"e": eid})]
    assert kinds == expected and kinds[0] == "ENROLLED" and kinds[-1] == "NEEDS_REVIEW"
    assert f'href="../sequences/{SEQ}"' in r.text


@pytest.mark.parametrize("path, status", [
    ("/sequences/no-such-sequence", 404),
    ("/api/sequences/no-such-sequence", 404),
    ("/review?sequence=no-such-sequence", 404),
    ("/leads/999999999", 404),
    ("/leads/abc", 422),
    ("/leads/0", 422),
    ("/leads/-5", 422),
    ("/leads/99999999999999999999999", 422),
    (f"/sequences/{SEQ}?days=0", 422),
    (f"/sequences/{SEQ}?days=abc", 422),
    (f"/sequences/{SEQ}?now=yesterday", 422),
    ("/review?limit=0", 422),
    ("/review?offset=-1", 422),
    ("/accounts?window=0", 422),
])
def test_bad_input_is_refused(client, path, status):
    r = client.get(path)
    assert r.status_code == status, r.text[:500]
    if path.startswith("/api/"):
        assert "detail" in r.json()
    else:
        assert r.headers["content-type"].startswith("text/html") and 'id="error"' in r.text


def test_names_and_text_are_escaped(seeded):
    """Sequence names, step keys and event texts go into HTML and SVG escaped."""
    from outreach.web import svg

    chart = svg.hbars("x", "<b>", [('<script>alert(1)</script>', 3, '"&')])
    assert "<script>" not in chart and "&lt;script&gt;" in chart and "&quot;&amp;" in chart


def test_healthz_and_icon(client):
    assert client.get("/healthz").json() == {"ok": True}
    r = client.get("/icon.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")


def test_empty_database_renders(database_url):
    """No sequences, no rollup: the pages still answer."""
    from tests.conftest import TABLES

    from outreach.store.db import get_engine

    from tests.web.conftest import DERIVED

    eng = get_engine(database_url)
    with eng.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {', '.join(TABLES + DERIVED)} RESTART IDENTITY CASCADE")
    with TestClient(create_app(eng)) as c:
        assert 'id="empty"' in c.get("/").text
        assert c.get("/accounts").status_code == 200
        assert 'id="empty"' in c.get("/review").text
    assert metrics.funnel(eng) == []
