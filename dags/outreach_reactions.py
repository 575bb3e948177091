"""
### outreach_reactions: the event-driven fast path

Runs when inbound signals arrive, seconds after a reply instead of at the next 6-hourly tick. Scheduled on the
Asset `outreach_inbound_signals`, fed by an `AssetWatcher` whose `InboundSignalTrigger` (in the triggerer)
LISTENs for the webhook receiver's PostgreSQL NOTIFY and also polls the inbound table as a fallback.

Tasks: `ingest_signals` matches every unprocessed signal (webhook or poll) to its enrollments and fires the
triggers it satisfies, then plans the enrollments a signal made due now; `advance_<provider>` (the same
operators as the backbone, mapped over account partitions) advances **only those** enrollments.

A burst of replies coalesces: the trigger debounces, asset events queued while a run is active make one next
run (`max_active_runs=1`). Same exactly-once guarantees as `outreach_sequences` (leases, intent, fencing); the
backbone still polls, and a signal seen by both paths is stored once (unique provider reference).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, AssetWatcher, task

from outreach.notifiers import OutreachNotifier
from outreach.operators.advance import OPERATORS
from outreach.triggers.inbound import InboundSignalTrigger

inbound_signals = Asset(
    "outreach_inbound_signals",
    uri="outreach://inbound_signals",
    watchers=[AssetWatcher(name="outreach_inbound_watcher", trigger=InboundSignalTrigger())],
)

with DAG(
    dag_id="outreach_reactions",
    schedule=[inbound_signals],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["outreach", "reactions", "event-driven"],
    default_args={
        "owner": "growth-data",
        "retries": 3,
        "retry_delay": timedelta(seconds=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=2),
        "on_failure_callback": OutreachNotifier(event="task_failed"),
    },
    on_failure_callback=OutreachNotifier(event="dag_run_failed"),
) as dag:

    @task
    def ingest_signals(triggering_asset_events=None) -> dict:
        """Ingest unprocessed signals; plan the enrollments they made due (small JSON: ids per partition)."""
        from outreach.clock import parse_now
        from outreach.engine.reactions import ingest_and_plan
        from outreach.operators.common import summary_line
        from outreach.store.db import get_engine

        n_events = sum(len(v) for v in (triggering_asset_events or {}).values())
        out = ingest_and_plan(get_engine(), parse_now(None))
        plan = out["plan"]
        print(f"ingest_signals ({n_events} asset events): {summary_line(out['counts'])}; to advance: "
              + (", ".join(f"{p} {sum(len(b['enrollment_ids']) for b in bs)} leads in {len(bs)} tasks"
                           for p, bs in plan.items()) or "nothing"))
        return out

    ingested = ingest_signals()
    for provider, operator in OPERATORS.items():

        @task(task_id=f"plan_{provider}")
        def plan(ingested: dict, provider: str = provider) -> list[dict]:
            """This provider's partitions: account ids and the enrollment ids to advance."""
            return ingested["plan"].get(provider, [])

        operator.partial(task_id=f"advance_{provider}").expand_kwargs(plan(ingested))
