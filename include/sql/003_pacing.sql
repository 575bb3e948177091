-- 003: human-like pacing per sender account (random gap between sends, warm-up ramp of the daily cap).
ALTER TABLE sender_accounts ADD COLUMN spacing jsonb;          -- {"min_seconds": n, "max_seconds": m}
ALTER TABLE sender_accounts ADD COLUMN warmup jsonb;           -- {"start_per_day": n, "increase_per_day": m}
ALTER TABLE sender_accounts ADD COLUMN first_send_at timestamptz;  -- the warm-up ramp counts days from here
CREATE INDEX events_account_attempts ON events (account_id, occurred_at) WHERE kind = 'ATTEMPTED';
