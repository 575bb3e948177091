-- Recompute the daily rollup for [:start_day, :end_day) from the event log, then upsert.
-- Run by aggregate_metrics for its data interval: a rerun or a backfill gives identical numbers.
-- Cost follows the interval's events (events_occurred index), not all history.
DELETE FROM metrics_daily WHERE day >= :start_day AND day < :end_day;
INSERT INTO metrics_daily (day, sequence_id, version_id, step, variant, account_id, metric, value)
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, sequence_id, version_id, coalesce(step, ''),
       coalesce(variant, ''), coalesce(account_id, 0), metric, count(*)
FROM events
CROSS JOIN LATERAL (
    SELECT kind AS metric
    UNION ALL
    SELECT kind || ':' || split_part(reason, ':', 1) WHERE kind IN ('SKIPPED', 'FAILED', 'RETRY_SCHEDULED', 'NEEDS_REVIEW') AND reason IS NOT NULL
    UNION ALL
    SELECT 'RECONCILED' WHERE kind = 'SENT' AND reason = 'reconciled'
    UNION ALL
    SELECT 'REPLIED:' || (data ->> 'intent') WHERE kind = 'REPLIED' AND data ? 'intent'
) m
WHERE occurred_at >= CAST(:start_day AS date) AND occurred_at < CAST(:end_day AS date) AND sequence_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (day, sequence_id, version_id, step, variant, account_id, metric)
DO UPDATE SET value = EXCLUDED.value, computed_at = now();
