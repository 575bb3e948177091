"""The dashboard's HTML (Jinja2, autoescaped). Links are relative (``root`` is the way back to the app's root),
so the same pages work at ``/`` (``python -m outreach.web``) and under Airflow at ``/outreach/`` in an iframe."""
from __future__ import annotations

from urllib.parse import quote

from jinja2 import DictLoader, Environment, select_autoescape

from outreach.engine.metrics import bucket_label, human_seconds

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · Outreach</title>
<link rel="icon" href="{{ root }}icon.svg" type="image/svg+xml">
<style>
 body { font: 14px/1.45 system-ui, sans-serif; color: #111827; margin: 0; background: #f9fafb; }
 header { background: #111827; color: #f9fafb; padding: 10px 20px; display: flex; gap: 18px; align-items: center; }
 header a { color: #d1d5db; text-decoration: none; } header a:hover { color: #fff; }
 header strong { color: #fff; margin-right: 12px; }
 main { padding: 16px 20px 40px; max-width: 1280px; }
 h1 { font-size: 20px; margin: 6px 0 2px; } h2 { font-size: 16px; margin: 26px 0 8px; }
 .muted { color: #6b7280; } .badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; }
 .ACTIVE { background: #dcfce7; color: #166534; } .PAUSED { background: #fef3c7; color: #92400e; }
 .ARCHIVED, .DISABLED, .COMPLETED, .SKIPPED { background: #e5e7eb; color: #374151; }
 .alert, .FAILED, .NEEDS_REVIEW { background: #fee2e2; color: #991b1b; }
 table { border-collapse: collapse; background: #fff; margin: 4px 0 8px; }
 th, td { padding: 4px 8px; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: top; }
 .scroll { overflow-x: auto; max-width: 100%; } #funnel { font-size: 13px; }
 th { background: #f3f4f6; font-weight: 600; font-size: 12px; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
 .cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 10px 0; }
 .card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px 14px; min-width: 110px; }
 .card b { display: block; font-size: 20px; } .chart { background: #fff; border: 1px solid #e5e7eb; border-radius: 6px; }
 form.inline { display: inline; } code { font-size: 12px; }
</style></head>
<body>
<header><strong>Outreach</strong>
 <a href="{{ root }}">Sequences</a> <a href="{{ root }}accounts">Accounts</a> <a href="{{ root }}review">Review</a>
 <a href="{{ root }}inbound">Inbound</a>
</header>
<main>
{% block body %}{% endblock %}
</main></body></html>
"""

INDEX = """{% extends "base" %}{% block body %}
<h1>Sequences</h1>
<p class="muted">From the metrics rollup (recomputed from the event log by every run and backfill){% if anchor %};
 data up to {{ anchor }}{% endif %}.</p>
{% if not sequences %}<p id="empty">No sequences yet: <code>outreach sequences apply FILE.yaml</code>.</p>{% else %}
<table id="sequences"><tr><th>sequence</th><th>status</th><th class="n">version</th><th class="n">enrolled</th>
 <th class="n">sent</th><th class="n">replied</th><th class="n">positive</th><th class="n">reply %</th>
 <th class="n">failed</th><th class="n">to review</th></tr>
{% for s in sequences %}<tr data-sequence="{{ s.name }}">
 <td><a href="{{ root }}sequences/{{ s.name | urlq }}">{{ s.name }}</a></td>
 <td><span class="badge {{ s.status }}">{{ s.status }}</span></td><td class="n">{{ s.version or '-' }}</td>
 <td class="n">{{ s.enrolled | num }}</td><td class="n">{{ s.sent | num }}</td><td class="n">{{ s.replied | num }}</td>
 <td class="n">{{ s.positive | num }}</td><td class="n">{{ s.reply_rate | pct }}</td><td class="n">{{ s.failed | num }}</td>
 <td class="n">{% if s.review %}<a href="{{ root }}review?sequence={{ s.name | urlq }}">{{ s.review }}</a>{% else %}0{% endif %}</td>
</tr>{% endfor %}</table>
<h2>Reply rate per sequence</h2>
{{ rate_chart }}
{% endif %}
{% endblock %}"""

SEQUENCE = """{% extends "base" %}{% block body %}
<h1 id="sequence-name">{{ seq.name }} <span class="badge {{ seq.status }}">{{ seq.status }}</span></h1>
<p class="muted">version {{ seq.version }} · accounts {{ (seq.accounts or []) | join(', ') }} ·
 {% if d.since %}days {{ d.since }} to {{ d.anchor }}{% else %}all days{% endif %} ·
 <a href="?days=7">7 days</a> · <a href="?days=30">30 days</a> · <a href="?">all</a>
 {% if d.review %}· <a href="{{ root }}review?sequence={{ seq.name | urlq }}">{{ d.review }} awaiting review</a>{% endif %}</p>
<div class="cards">
 {% for label, key in cards %}<div class="card" data-card="{{ key }}"><span class="muted">{{ label }}</span>
 <b>{{ totals[key] | num }}</b></div>{% endfor %}
</div>

<h2>Funnel</h2>
{{ funnel_chart }}
<div class="scroll"><table id="funnel"><tr><th>step</th><th>action</th>
 {% for key, label in columns %}<th class="n">{{ label }}</th>{% endfor %}
 <th class="n">conv %</th><th class="n">resp %</th><th class="n">reply p50</th><th class="n">reply p90</th></tr>
{% for r in d.funnel %}<tr data-step="{{ r.step }}">
 <td>{{ r.step }}</td><td>{{ r.action }}</td>
 {% for key, label in columns %}<td class="n" data-metric="{{ key }}">{{ r.get(key, 0) | num }}</td>{% endfor %}
 <td class="n" data-metric="conversion">{{ r.conversion | pct }}</td><td class="n">{{ r.response_rate | pct }}</td>
 <td class="n">{{ r.reply_p50_s | dur }}</td><td class="n">{{ r.reply_p90_s | dur }}</td>
</tr>{% endfor %}</table></div>
<p class="muted">conv %: the step's actions as a share of the preceding steps' (of the enrolled for the start step).
 resp %: replies, follow-backs and acceptances per sent. Counts are events: a lead replying twice counts twice.</p>

<h2>Conversion per step</h2>
{{ edges_chart }}
<table id="edges"><tr><th>from</th><th>trigger</th><th>to</th><th class="n">from: performed</th>
 <th class="n">fired</th><th class="n">to: performed</th><th class="n">conversion</th></tr>
{% for e in d.edges %}<tr><td>{{ e['from'] }}</td><td>{{ e.trigger }}</td><td>{{ e.to }}</td>
 <td class="n">{{ e.from_performed | num }}</td><td class="n">{{ e.fired | num }}</td>
 <td class="n">{{ e.to_performed | num }}</td><td class="n">{{ e.conversion | pct }}</td></tr>{% endfor %}
</table>

<h2>Conversion per variant</h2>
{% if d.variants %}{{ variant_chart }}
<table id="variants"><tr><th>step</th><th>variant</th><th class="n">sent</th><th class="n">replied</th>
 <th class="n">positive</th><th class="n">reply %</th><th class="n">positive %</th><th></th></tr>
{% for v in d.variants %}<tr data-variant="{{ v.step }}/{{ v.variant }}"><td>{{ v.step }}</td><td>{{ v.variant }}</td>
 <td class="n">{{ v.sent | num }}</td><td class="n">{{ v.replied | num }}</td><td class="n">{{ v.positive | num }}</td>
 <td class="n">{{ v.reply_rate | pct }}</td><td class="n">{{ v.positive_rate | pct }}</td>
 <td>{% if v.winner %}<span class="badge ACTIVE">winner</span>{% endif %}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No A/B/n variants in this sequence.</p>{% endif %}

<h2>Replies over time</h2>
{{ replies_chart }}
<h2>Sends per day</h2>
{{ sends_chart }}

<h2>Time to reply</h2>
{{ latency_chart }}
{% if d.latency %}<table id="latency"><tr><th>signal</th><th class="n">count</th><th class="n">median</th>
 <th class="n">p90</th><th class="n">mean</th></tr>
{% for l in d.latency %}<tr><td>{{ l.signal }}</td><td class="n">{{ l.count | num }}</td><td class="n">{{ l.p50_s | dur }}</td>
 <td class="n">{{ l.p90_s | dur }}</td><td class="n">{{ l.mean_s | dur }}</td></tr>{% endfor %}</table>
<p class="muted">From the SENT of the answered step to the signal; quantiles interpolated inside the buckets.</p>{% endif %}

<h2>Failed, skipped and deferred, by reason</h2>
{% if d.reasons %}<table id="reasons"><tr><th>event</th><th>reason</th><th class="n">count</th></tr>
{% for r in d.reasons %}<tr><td>{{ r.kind }}</td><td>{{ r.reason }}</td><td class="n">{{ r.count | num }}</td></tr>{% endfor %}
</table>{% else %}<p class="muted">None.</p>{% endif %}
{% endblock %}"""

ACCOUNTS = """{% extends "base" %}{% block body %}
<h1>Sender accounts</h1>
<p class="muted">Limits and rolling windows as of {{ now }}; counts over the {{ h.recent_days }} days to {{ h.anchor }}
 from the rollup; failure rate over each account's last {{ h.window }} attempts (the automatic pause judges it).</p>
{% if not h.accounts %}<p>No accounts yet.</p>{% endif %}
{% for a in h.accounts %}
<section class="account" data-account="{{ a.name }}">
<h2>{{ a.name }} <span class="muted">{{ a.provider }}</span> <span class="badge {{ a.status }}">{{ a.status }}</span>
 {% if a.blocked_until %}<span class="badge alert">blocked until {{ a.blocked_until | ts }}</span>{% endif %}
 {% for t, until in a.action_blocks %}<span class="badge alert">{{ t }} rate-blocked until {{ until | ts }}</span>{% endfor %}</h2>
<div class="cards">
 <div class="card"><span class="muted">sent</span><b data-metric="SENT">{{ a.recent['SENT'] | num }}</b></div>
 <div class="card"><span class="muted">attempted</span><b data-metric="ATTEMPTED">{{ a.recent['ATTEMPTED'] | num }}</b></div>
 <div class="card"><span class="muted">failed</span><b data-metric="FAILED">{{ a.recent['FAILED'] | num }}</b></div>
 <div class="card"><span class="muted">bounced</span><b data-metric="BOUNCED">{{ a.recent['BOUNCED'] | num }}</b></div>
 <div class="card"><span class="muted">retries</span><b data-metric="RETRY_SCHEDULED">{{ a.recent['RETRY_SCHEDULED'] | num }}</b></div>
 <div class="card"><span class="muted">released on 429 / limit</span><b data-metric="rate_limited">{{ a.rate_limited | num }}</b></div>
 <div class="card"><span class="muted">failure rate</span><b data-metric="failure_rate">
  {% if a.failure and a.failure.rate is not none %}{{ (100 * a.failure.rate) | round(1) }}%{% else %}-{% endif %}</b>
  <span class="muted">{% if a.failure %}{{ a.failure.failed }} of {{ a.failure.attempted }}{% endif %}</span></div>
</div>
{% if a.limits %}<table class="limits"><tr><th>action</th><th>window</th><th>sends against limit</th><th class="n">used</th>
 <th class="n">limit</th></tr>
{% for l in a.limits %}<tr><td>{{ l.action_type }}</td><td>{{ l.window }}</td><td>{{ l.meter }}</td>
 <td class="n">{{ l.used | num }}</td><td class="n">{{ l.limit | num }}</td></tr>{% endfor %}</table>{% endif %}
{% for s in a.last_seen %}<p class="muted">{{ s.action_type }}: provider said {{ s.remaining }} of {{ s.limit }} left,
 reset {{ s.reset_at | ts }}</p>{% endfor %}
{{ a.chart }}
{% for al in a.alerts %}<p class="badge alert">{{ al.occurred_at | ts }} ALERT {{ al.reason }}:
 {{ al.data.get('failed') }} of {{ al.data.get('attempted') }} failed, {{ al.data.get('action') }}</p> {% endfor %}
</section>
{% endfor %}
{% endblock %}"""

REVIEW = """{% extends "base" %}{% block body %}
<h1>Leads awaiting review</h1>
<p class="muted">Enrollments in NEEDS_REVIEW: a send may or may not have landed and the provider could not tell.
 Nothing is re-sent until someone decides. {{ total }} in all{% if seq %} for {{ seq }}{% endif %}.</p>
{% if rows %}<table id="review"><tr><th>lead</th><th>person</th><th>sequence</th><th>step</th><th>account</th>
 <th class="n">attempts</th><th>reason</th><th>last event</th><th>since</th></tr>
{% for r in rows %}<tr data-enrollment="{{ r.id }}"><td><a href="{{ root }}leads/{{ r.id }}">#{{ r.id }}</a></td>
 <td>{{ r.person }}</td><td>{{ r.sequence }}</td><td>{{ r.current_step }}</td><td>{{ r.account or '' }}</td>
 <td class="n">{{ r.attempts }}</td><td>{{ r.ended_reason or '' }}</td><td>{{ r.last_kind or '' }} {{ r.last_reason or '' }}</td>
 <td>{{ r.updated_at | ts }}</td></tr>{% endfor %}</table>
{% if more %}<p><a href="?{{ more }}">next {{ limit }}</a></p>{% endif %}
{% else %}<p id="empty">Nobody is waiting for review.</p>{% endif %}
{% endblock %}"""

INBOUND = """{% extends "base" %}{% block body %}
<h1>Inbound: webhooks and the reactions backlog</h1>
<p class="muted">Deliveries to <code>/webhooks/&lt;provider&gt;</code> over the {{ i.hours }} hours to {{ now }}, and the
 signals not ingested yet (the <code>outreach_reactions</code> DAG and the 6-hourly polls take them).</p>
<div class="cards">
 <div class="card"><span class="muted">unprocessed signals</span><b id="pending">{{ i.pending.n | num }}</b>
  <span class="muted">{% if i.pending.oldest %}oldest {{ i.pending.oldest | ts }}{% endif %}</span></div>
 <div class="card"><span class="muted">accepted deliveries</span><b id="accepted">{{ i.accepted | num }}</b></div>
 <div class="card"><span class="muted">refused deliveries</span><b id="refused">{{ i.refused | num }}</b></div>
 <div class="card"><span class="muted">new signals by webhook</span><b id="new">{{ i.new_signals | num }}</b></div>
</div>
<h2>By provider and outcome</h2>
{% if i.by %}<table id="by"><tr><th>provider</th><th>outcome</th><th>reason</th><th class="n">status</th>
 <th class="n">deliveries</th><th class="n">signals</th><th class="n">new</th><th>last</th></tr>
{% for r in i.by %}<tr><td>{{ r.provider }}</td><td><span class="badge {{ 'alert' if r.outcome == 'refused' else 'ACTIVE' }}">
 {{ r.outcome }}</span></td><td>{{ r.reason or '' }}</td><td class="n">{{ r.status }}</td><td class="n">{{ r.n | num }}</td>
 <td class="n">{{ r.signals | num }}</td><td class="n">{{ r.new | num }}</td><td>{{ r.last | ts }}</td></tr>{% endfor %}</table>
{% else %}<p id="none">No deliveries in this window.</p>{% endif %}
<h2>Last refusals</h2>
{% if i.refusals %}<table id="refusals"><tr><th>received</th><th>provider</th><th class="n">status</th><th>reason</th>
 <th>from</th><th class="n">bytes</th><th>body sha256</th></tr>
{% for r in i.refusals %}<tr><td>{{ r.received_at | ts }}</td><td>{{ r.provider }}</td><td class="n">{{ r.status }}</td>
 <td>{{ r.reason }}</td><td>{{ r.remote or '' }}</td><td class="n">{{ r.body_bytes | num }}</td>
 <td><code>{{ (r.body_sha256 or '')[:16] }}</code></td></tr>{% endfor %}</table>
{% else %}<p class="muted">None.</p>{% endif %}
{% endblock %}"""

LEAD = """{% extends "base" %}{% block body %}
{% set e = lead.enrollment %}
<h1>Lead #{{ e.id }}: {{ e.person }}</h1>
<p class="muted">in <a href="{{ root }}sequences/{{ e.sequence | urlq }}">{{ e.sequence }}</a> v{{ e.version }}
 via {{ e.account or '-' }} · {% for i in lead.identities %}{{ i.kind }}={{ i.value }} {% endfor %}</p>
<p><span class="badge {{ e.status }}">{{ e.status }}</span> step <b>{{ e.current_step }}</b> ({{ e.phase }}){% if e.next_run_at %},
 next at {{ e.next_run_at | ts }}{% endif %}{% if e.ended_reason %}, ended: {{ e.ended_reason }}{% endif %}
 · attempts {{ e.attempts }}{% if e.in_flight %} · <span class="badge alert">in flight</span>{% endif %}</p>
<h2>Timeline</h2>
<table id="timeline"><tr><th>when (UTC)</th><th>event</th><th>step</th><th>variant</th><th>reason</th><th>account</th>
 <th>details</th></tr>
{% for x in lead.events %}<tr data-kind="{{ x.kind }}"><td>{{ x.occurred_at | ts }}</td><td>{{ x.kind }}</td>
 <td>{{ x.step or '' }}</td><td>{{ x.variant or '' }}</td><td>{{ x.reason or '' }}</td><td>{{ x.account or '' }}</td>
 <td>{% if x.provider_ref %}<code>ref={{ x.provider_ref }}</code> {% endif %}{% if x.data %}{% for k, v in x.data.items() %}{% if k in shown and v not in (none, '') %}<code>{{ k }}={{ v }}</code> {% endif %}{% endfor %}{% endif %}</td>
</tr>{% endfor %}</table>
{% endblock %}"""

ERROR = """{% extends "base" %}{% block body %}
<h1>{{ code }}</h1><p id="error">{{ detail }}</p><p><a href="{{ root }}">Back to the sequences</a></p>
{% endblock %}"""

ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="24" height="24">'
        '<rect x="3" y="4" width="18" height="3" rx="1" fill="#2563eb"/><rect x="5" y="10" width="14" height="3" rx="1" '
        'fill="#16a34a"/><rect x="8" y="16" width="8" height="3" rx="1" fill="#f59e0b"/></svg>')


def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _ts(v) -> str:
    if v is None:
        return "-"
    from datetime import timezone

    return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if hasattr(v, "astimezone") else str(v)


def environment() -> Environment:
    env = Environment(loader=DictLoader({"base": BASE, "index": INDEX, "sequence": SEQUENCE, "accounts": ACCOUNTS,
                                         "review": REVIEW, "lead": LEAD, "error": ERROR, "inbound": INBOUND}),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(num=_num, pct=_pct, dur=human_seconds, ts=_ts, urlq=lambda s: quote(str(s), safe=""),
                       bucket=bucket_label)
    return env
