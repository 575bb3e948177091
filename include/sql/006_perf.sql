-- 006: indexes for the advance hot path and the metrics rollup (bench/perf/README.md, "what bought the speed").
-- Both are partial on SENT events (about one event in five), so they stay small and cost one extra index entry
-- per send.

-- The gate's conversation history (engine/gate.py, _SENT): the last SENT per (person, enrollment) of a batch's
-- people as an index-only scan instead of reading every SENT event of those people from the heap.
CREATE INDEX events_person_sent ON events (person_id) INCLUDE (enrollment_id, occurred_at) WHERE kind = 'SENT';

-- The latency rollup (include/sql/metrics_rollup.sql): the latest SENT of an enrollment's step at or before a
-- signal, as a top-1 index probe instead of a filtered scan over all of the enrollment's events.
CREATE INDEX events_sent_step ON events (enrollment_id, step, occurred_at DESC) WHERE kind = 'SENT';
