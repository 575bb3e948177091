-- the event-driven fast path: every webhook delivery is recorded (accepted or refused), and a NOTIFY on
-- channel `outreach_inbound` wakes the reactions trigger when a delivery stored new signals

CREATE TABLE webhook_deliveries (
    id           bigserial PRIMARY KEY,
    provider     text NOT NULL,                 -- x, linkedin, xmtp, email
    received_at  timestamptz NOT NULL DEFAULT now(),
    status       int  NOT NULL,                 -- the HTTP status we answered
    outcome      text NOT NULL CHECK (outcome IN ('accepted', 'refused', 'crc')),
    reason       text,                          -- refusals: missing_signature, bad_signature, replayed, ...
    account_id   bigint REFERENCES sender_accounts (id),
    signals      int  NOT NULL DEFAULT 0,       -- signals in the payload
    new_signals  int  NOT NULL DEFAULT 0,       -- of which not seen before (by either path)
    body_sha256  text,
    body_bytes   int,
    remote       text
);
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (received_at DESC);

-- the trigger's fallback poll and the reactions DAG read the unprocessed tail by id
CREATE INDEX IF NOT EXISTS inbound_unprocessed_received ON inbound_signals (id, received_at)
    WHERE processed_at IS NULL;
