-- Recompute the rollups for the UTC days [:start_day, :end_day) from the event log, then upsert.
-- Run by aggregate_metrics (and `outreach tick`) for its data interval, in one transaction: a rerun or a backfill
-- gives identical numbers, and a backfill over a month repairs that month. Cost follows the interval's events
-- (events_occurred index), never all history. Statements are separated by semicolons (none in comments).
--
-- metrics_daily, per day x sequence x version x step x variant x sender account:
--   <KIND>                 every event kind: ENROLLED, ATTEMPTED, SENT, FAILED, SKIPPED, DEFERRED,
--                          RETRY_SCHEDULED, NEEDS_REVIEW, REPLIED, FOLLOWED_BACK, CONNECTION_ACCEPTED,
--                          DELIVERED and READ (where a provider reports them), BOUNCED, TRIGGER_FIRED, ...
--   <KIND>:<reason>        failed, skipped, deferred, retried, review and fired triggers by reason
--                          (the reason's first segment: `timeout:max_attempts` counts as `timeout`)
--   RECONCILED             SENT whose outcome was recovered by reconcile (nothing re-sent)
--   REPLIED:<intent>       replies by intent (positive, negative, neutral, unsubscribe), the intent being
--                          data->>'intent' of the REPLIED event
DELETE FROM metrics_daily WHERE day >= :start_day AND day < :end_day;
-- The day's events are grouped first (one group per day, sequence, version, step, variant, account, kind and the
-- few attributes a metric reads: ~100k groups for 10M events), and only the groups are expanded into metrics:
-- expanding every event first made a row per event and metric to aggregate (bench/perf/README.md: 63 s -> 10 s
-- on 10M events, with metrics.aggregate's work_mem).
INSERT INTO metrics_daily (day, sequence_id, version_id, step, variant, account_id, metric, value)
WITH g AS (
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, sequence_id, version_id, coalesce(step, '') AS step,
           coalesce(variant, '') AS variant, coalesce(account_id, 0) AS account_id, kind,
           CASE WHEN kind IN ('SKIPPED', 'FAILED', 'RETRY_SCHEDULED', 'NEEDS_REVIEW', 'DEFERRED', 'TRIGGER_FIRED')
                THEN split_part(reason, ':', 1) END AS why,
           kind = 'SENT' AND reason IS NOT DISTINCT FROM 'reconciled' AS reconciled,
           CASE WHEN kind = 'REPLIED' THEN data ->> 'intent' END AS intent,
           count(*) AS n
    FROM events
    WHERE occurred_at >= CAST(:start_day AS date) AND occurred_at < CAST(:end_day AS date) AND sequence_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
)
SELECT g.day, g.sequence_id, g.version_id, g.step, g.variant, g.account_id, m.metric, sum(g.n)
FROM g
CROSS JOIN LATERAL (VALUES (g.kind), (g.kind || ':' || g.why), (CASE WHEN g.reconciled THEN 'RECONCILED' END),
                           ('REPLIED:' || g.intent)) AS m(metric)
WHERE m.metric IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (day, sequence_id, version_id, step, variant, account_id, metric)
DO UPDATE SET value = EXCLUDED.value, computed_at = now();

-- metrics_latency: for every signal answering a step (REPLIED, FOLLOWED_BACK, CONNECTION_ACCEPTED,
-- REPLIED_TO_NOTE) in the interval, the time since the latest SENT of the same enrollment and step at or before
-- it, counted per latency bucket (lower bounds in seconds: the edges parameter, metrics.LATENCY_EDGES).
-- Signals with no such SENT have no latency.
-- The SENT is one probe of events_sent_step (006_perf.sql) per signal in the interval.
DELETE FROM metrics_latency WHERE day >= :start_day AND day < :end_day;
INSERT INTO metrics_latency (day, sequence_id, version_id, step, variant, account_id, signal, bucket, count,
                             sum_seconds)
SELECT (r.occurred_at AT TIME ZONE 'UTC')::date AS day, r.sequence_id, r.version_id, r.step,
       coalesce(r.variant, ''), coalesce(r.account_id, 0), r.kind,
       (CAST(:edges AS int[]))[width_bucket(l.seconds, CAST(:edges AS bigint[]))] AS bucket,
       count(*), sum(l.seconds)
FROM events r
CROSS JOIN LATERAL (
    SELECT s.occurred_at FROM events s
    WHERE s.enrollment_id = r.enrollment_id AND s.kind = 'SENT' AND s.step = r.step
      AND s.occurred_at <= r.occurred_at
    ORDER BY s.occurred_at DESC LIMIT 1
) s
CROSS JOIN LATERAL (SELECT CAST(floor(extract(epoch FROM r.occurred_at - s.occurred_at)) AS bigint) AS seconds) l
WHERE r.kind IN ('REPLIED', 'FOLLOWED_BACK', 'CONNECTION_ACCEPTED', 'REPLIED_TO_NOTE')
  AND r.occurred_at >= CAST(:start_day AS date) AND r.occurred_at < CAST(:end_day AS date)
  AND r.sequence_id IS NOT NULL AND r.enrollment_id IS NOT NULL AND r.step IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
ON CONFLICT (day, sequence_id, version_id, step, variant, account_id, signal, bucket)
DO UPDATE SET count = EXCLUDED.count, sum_seconds = EXCLUDED.sum_seconds, computed_at = now()
