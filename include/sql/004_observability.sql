-- 004: observability. Signal-latency rollup (time to reply / follow back / accept), and the indexes the
-- dashboard, the rollups and the account alerts read through. Everything here is derived from the event log.

-- time from an action (its SENT event) to the signal answering it, in latency buckets, per day of the signal
-- x sequence x version x step x variant x account. Recomputed per interval by include/sql/metrics_rollup.sql.
CREATE TABLE metrics_latency (
    day          date   NOT NULL,             -- UTC day of the signal
    sequence_id  bigint NOT NULL,
    version_id   bigint NOT NULL,
    step         text   NOT NULL,             -- the step that was answered
    variant      text   NOT NULL,
    account_id   bigint NOT NULL,
    signal       text   NOT NULL,             -- REPLIED, FOLLOWED_BACK, CONNECTION_ACCEPTED, REPLIED_TO_NOTE
    bucket       int    NOT NULL,             -- lower bound of the latency bucket, seconds
    count        bigint NOT NULL,
    sum_seconds  bigint NOT NULL,             -- whole seconds, so sums are exact and reruns identical
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, sequence_id, version_id, step, variant, account_id, signal, bucket)
);

-- dashboard reads: one sequence's rollup rows (index-only), one account's recent rows
CREATE INDEX metrics_daily_sequence ON metrics_daily (sequence_id, day) INCLUDE (step, variant, metric, value);
CREATE INDEX metrics_daily_account ON metrics_daily (account_id, day) INCLUDE (metric, value);
CREATE INDEX metrics_daily_metric ON metrics_daily (metric, sequence_id) INCLUDE (value);
CREATE INDEX metrics_latency_sequence ON metrics_latency (sequence_id, day)
    INCLUDE (step, variant, signal, bucket, count, sum_seconds);

-- account alerts: failures and bounces of one account since a time; its last alert
CREATE INDEX events_account_failures ON events (account_id, occurred_at) WHERE kind IN ('FAILED', 'BOUNCED');
CREATE INDEX events_account_alerts ON events (account_id, occurred_at) WHERE kind = 'ALERT';

-- leads awaiting review, newest first, per sequence
CREATE INDEX enrollments_review ON enrollments (sequence_id, updated_at) WHERE status = 'NEEDS_REVIEW';
