"""
### outreach_sequences: the 6-hourly backbone

Polls every sender account's inbox and relationships (incrementally, from stored cursors), ingests the new
signals (replies, follow-backs) and fires the triggers they satisfy and the timeouts that passed, advances due
leads per provider through that provider's advance operator (mapped over batches of accounts, never one task
per lead), and recomputes the metrics rollup.

**Safe to retry, clear, rerun, overlap and backfill.** Sends are decided for *now* only and each rests on the
invariant of `docs/architecture.md` (lease, intent before effect, fenced outcome, reconcile before retry).
A backfill run never sends: it only recomputes metrics for its data interval.

**Variables**: `outreach_account_batch_size` (sender accounts per mapped poll/advance task, default 20: lower it
to spread a small deployment over more workers); `outreach_alert_*` (see `aggregate_metrics`).

**Params** (trigger with config): `sequences` (names; empty = all), `providers` (empty = all implemented),
`dry_run` (decide and log, send nothing), `max_actions` (cap on sends per advance task), `now` (engine clock,
ISO 8601; for simulations and demos only; empty = real time).

Same engine code as `outreach tick`.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param, task

from outreach.notifiers import OutreachNotifier
from outreach.operators.advance import OPERATORS
from outreach.store.catalog import cached_sequence_names

PROVIDERS = tuple(OPERATORS)


def account_batch_size() -> int:
    """Sender accounts per mapped poll/advance task: the Airflow Variable ``outreach_account_batch_size``
    (default 20). Smaller spreads a small deployment over more workers; read at run time, never at parse time."""
    from airflow.sdk import Variable

    raw = Variable.get("outreach_account_batch_size", default=None)
    try:
        return max(1, int(raw)) if raw not in (None, "") else 20
    except ValueError:
        print(f"outreach_account_batch_size={raw!r} is not an integer: using 20")
        return 20

with DAG(
    dag_id="outreach_sequences",
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    doc_md=__doc__,
    tags=["outreach", "sequences"],
    render_template_as_native_obj=True,
    default_args={
        "owner": "growth-data",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": OutreachNotifier(event="task_failed"),  # logs; POSTs to `outreach_alerts` if set
    },
    on_failure_callback=OutreachNotifier(event="dag_run_failed"),
    params={
        # a multi-select of the sequences `outreach sequences apply` has seen (a small file, never a DB query
        # at parse time); any name may still be typed
        "sequences": Param([], type="array", items={"type": "string"}, uniqueItems=True,
                           description="only these sequences",
                           **({"examples": names} if (names := cached_sequence_names()) else {})),
        "providers": Param([], type="array", items={"type": "string", "enum": list(PROVIDERS)},
                           description="only these providers"),
        "dry_run": Param(False, type="boolean", description="decide and log, send nothing"),
        "max_actions": Param(None, type=["null", "integer"], minimum=0, description="cap on sends per task"),
        "now": Param("", type="string", description="engine clock override, ISO 8601 (simulation only)"),
    },
) as dag:

    @task
    def plan_polls(params=None, dag_run=None) -> list[dict]:
        """Batches of accounts to poll, per provider. Small JSON: provider and account ids."""
        from outreach.engine.tick import poll_batches
        from outreach.operators.common import is_backfill
        from outreach.store.db import get_engine

        if is_backfill({"dag_run": dag_run}):
            print("plan_polls: backfill run, nothing to poll")
            return []
        wanted = params.get("providers") or PROVIDERS
        size = account_batch_size()
        batches = [{"provider": p, "account_ids": b} for p in wanted for b in poll_batches(get_engine(), p, size)]
        print(f"plan_polls: {len(batches)} batches, {sum(len(b['account_ids']) for b in batches)} accounts")
        return batches

    @task
    def poll_inboxes(batch: dict, params=None) -> dict:
        """New direct messages since each account's cursor."""
        from outreach.engine.tick import poll
        from outreach.operators.common import engine_clock, summary_line
        from outreach.store.db import get_engine

        counts = poll(get_engine(), batch["account_ids"], "inbox", engine_clock(params.get("now")))
        print(f"poll_inboxes {batch['provider']}: {summary_line(counts)}")
        return counts

    @task
    def poll_relationships(batch: dict, params=None) -> dict:
        """New followers (follow-backs) since each account's cursor."""
        from outreach.engine.tick import poll
        from outreach.operators.common import engine_clock, summary_line
        from outreach.store.db import get_engine

        counts = poll(get_engine(), batch["account_ids"], "relationships", engine_clock(params.get("now")))
        print(f"poll_relationships {batch['provider']}: {summary_line(counts)}")
        return counts

    @task(trigger_rule="none_failed")
    def ingest_trigger_responses(params=None, dag_run=None) -> dict:
        """Match signals to enrollments, fire event triggers, then fire timeouts that passed."""
        from outreach.engine.tick import ingest
        from outreach.operators.common import engine_clock, is_backfill, summary_line
        from outreach.store.db import get_engine

        if is_backfill({"dag_run": dag_run}):
            return {"skipped": "backfill"}
        counts = ingest(get_engine(), engine_clock(params.get("now")))
        print(f"ingest_trigger_responses: {summary_line(counts)}")
        return counts

    @task(trigger_rule="none_failed")
    def aggregate_metrics(params=None, dag_run=None, data_interval_start=None, data_interval_end=None,
                          **context) -> dict:
        """Recompute the daily rollups for this run's window and upsert (a backfill repairs its interval), then
        pause accounts whose failure rate passed its threshold (Airflow Variables `outreach_alert_failure_rate`,
        default 0.2, `outreach_alert_window`, default 50, `outreach_alert_min_attempts`) and notify."""
        from outreach.engine.tick import aggregate
        from outreach.operators.common import engine_clock, is_backfill, summary_line
        from outreach.store.db import get_engine

        now = engine_clock(params.get("now"))
        if is_backfill({"dag_run": dag_run}):
            start, end = data_interval_start, data_interval_end  # exactly the interval: a backfill repairs it
        elif params.get("now"):
            start, end = now - timedelta(days=1), now  # simulated clock: the days around it
        else:  # late signals are dated when they happened: include the day before
            start, end = min(data_interval_start or now, now - timedelta(days=1)), max(data_interval_end or now, now)
        from outreach.engine.experiments import decide_winners

        result = aggregate(get_engine(), start, end)
        if not is_backfill({"dag_run": dag_run}):  # winners and account alerts are for now, never in a backfill
            result["experiments"] = decide_winners(get_engine(), now)
        if not is_backfill({"dag_run": dag_run}) and not params.get("dry_run"):  # a dry run pauses nothing
            from airflow.sdk import Variable

            from outreach.engine.alerts import AlertConfig, check_accounts
            from outreach.notifiers import notify_alerts

            cfg = AlertConfig.resolve(*(Variable.get(f"outreach_alert_{k}", default=None)
                                        for k in ("failure_rate", "window", "min_attempts")))
            alerts = check_accounts(get_engine(), now, cfg).get("alerts", [])
            result["accounts_paused"] = [a["account"] for a in alerts]
            notify_alerts(alerts, {"dag_run": dag_run, **context})
        print(f"aggregate_metrics: {summary_line({k: v for k, v in result.items() if not isinstance(v, dict)})}"
              f"{', experiments: ' + summary_line(result['experiments']) if 'experiments' in result else ''}")
        return result

    polls = plan_polls()
    ingested = ingest_trigger_responses()
    [poll_inboxes.expand(batch=polls), poll_relationships.expand(batch=polls)] >> ingested
    metrics = aggregate_metrics()

    for provider, operator in OPERATORS.items():

        @task(task_id=f"plan_advance_{provider}", trigger_rule="none_failed")
        def plan_advance(provider: str = provider, params=None, dag_run=None) -> list[list[int]]:
            """Accounts with due work, in batches; none -> the advance task is skipped."""
            from outreach.engine.tick import due_batches
            from outreach.operators.common import engine_clock, is_backfill
            from outreach.store.db import get_engine

            wanted = params.get("providers") or PROVIDERS
            if provider not in wanted or is_backfill({"dag_run": dag_run}):
                print(f"plan_advance_{provider}: not wanted in this run (provider filter or backfill)")
                return []
            batches = due_batches(get_engine(), provider, engine_clock(params.get("now")),
                                  params.get("sequences") or None, batch_size=account_batch_size())
            print(f"plan_advance_{provider}: {len(batches)} batches, {sum(map(len, batches))} accounts with due work")
            return batches

        planned = plan_advance()
        ingested >> planned
        advanced = operator.partial(
            task_id=f"advance_{provider}",
            now="{{ params.now }}",
            sequences="{{ params.sequences }}",
            max_actions="{{ params.max_actions }}",
            dry_run="{{ params.dry_run }}",
        ).expand(account_ids=planned)
        advanced >> metrics
