-- 001: the whole data model (DESIGN section 3).
-- Vocabulary of the source system: Sequences -> sequences, SequenceActions -> sequence_actions,
-- SequenceTriggers -> sequence_triggers, SequenceLeads -> enrollments (view sequence_leads),
-- SequenceTriggersResponses -> inbound_signals, SequenceActionsHistory -> events (view sequence_actions_history).

-- identity graph -------------------------------------------------------------
CREATE TABLE people (
    id              bigserial PRIMARY KEY,
    name            text,
    timezone        text,
    company_domain  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX people_company_domain ON people (company_domain) WHERE company_domain IS NOT NULL;

CREATE TABLE identities (
    id         bigserial PRIMARY KEY,
    person_id  bigint NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    kind       text   NOT NULL CHECK (kind IN ('twitter', 'twitter_username', 'linkedin', 'email', 'xmtp')),
    value      text   NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, value)
);
CREATE INDEX identities_person ON identities (person_id);

-- sender accounts --------------------------------------------------------------
CREATE TABLE sender_accounts (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    provider      text NOT NULL CHECK (provider IN ('x', 'linkedin', 'xmtp', 'email')),
    conn_id       text NOT NULL,
    user_id       text,
    timezone      text NOT NULL DEFAULT 'UTC',
    send_window   jsonb,
    limits        jsonb NOT NULL DEFAULT '{}'::jsonb,
    status        text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'PAUSED', 'DISABLED')),
    blocked_until timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- sequences and immutable versions ---------------------------------------------
CREATE TABLE sequences (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'PAUSED', 'ARCHIVED')),
    accounts    text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sequence_versions (
    id           bigserial PRIMARY KEY,
    sequence_id  bigint NOT NULL REFERENCES sequences (id),
    version      int    NOT NULL,
    definition   jsonb  NOT NULL,
    digest       text   NOT NULL,
    source_file  text,
    published_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sequence_id, version)
);

CREATE TABLE sequence_actions (
    version_id  bigint NOT NULL REFERENCES sequence_versions (id),
    key         text   NOT NULL,
    type        text   NOT NULL,
    provider    text,
    definition  jsonb  NOT NULL,
    PRIMARY KEY (version_id, key)
);

CREATE TABLE sequence_triggers (
    id              bigserial PRIMARY KEY,
    version_id      bigint NOT NULL REFERENCES sequence_versions (id),
    from_action     text   NOT NULL,
    kind            text   NOT NULL,
    to_action       text,              -- NULL: END
    to_provider     text,              -- provider of to_action (NULL for END / CHECK_FOR_REPLY)
    after_seconds   int,
    within_seconds  int,
    UNIQUE (version_id, from_action, kind)
);

-- enrollments (the source's SequenceLeads) ---------------------------------------
-- Hot scheduling columns are narrow; phase 'pending' = current_step's action is due at next_run_at,
-- phase 'waiting' = current_step was performed and its triggers are armed (next_run_at = timeout, if any).
CREATE TABLE enrollments (
    id                bigserial PRIMARY KEY,
    sequence_id       bigint NOT NULL REFERENCES sequences (id),
    version_id        bigint NOT NULL REFERENCES sequence_versions (id),
    person_id         bigint NOT NULL REFERENCES people (id),
    account_id        bigint REFERENCES sender_accounts (id),  -- account for the current step
    accounts          jsonb  NOT NULL DEFAULT '{}'::jsonb,     -- provider -> sender account id, fixed at enrolment
    status            text   NOT NULL DEFAULT 'ACTIVE'
                      CHECK (status IN ('ACTIVE', 'PAUSED', 'COMPLETED', 'FAILED', 'NEEDS_REVIEW', 'SKIPPED')),
    current_step      text   NOT NULL,
    phase             text   NOT NULL DEFAULT 'pending' CHECK (phase IN ('pending', 'waiting')),
    next_run_at       timestamptz,
    attempts          int    NOT NULL DEFAULT 0,
    in_flight         boolean NOT NULL DEFAULT false,  -- an ATTEMPTED event without outcome exists
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_action       text,
    last_action_at    timestamptz,
    variables         jsonb  NOT NULL DEFAULT '{}'::jsonb,
    ended_reason      text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sequence_id, person_id)
);
CREATE INDEX enrollments_due ON enrollments (account_id, next_run_at)
    WHERE status = 'ACTIVE' AND phase = 'pending';
CREATE INDEX enrollments_waiting ON enrollments (next_run_at)
    WHERE status = 'ACTIVE' AND phase = 'waiting';
CREATE INDEX enrollments_person ON enrollments (person_id);

-- append-only event log --------------------------------------------------------
CREATE TABLE events (
    id             bigserial PRIMARY KEY,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    kind           text   NOT NULL,
    enrollment_id  bigint,
    person_id      bigint,
    sequence_id    bigint,
    version_id     bigint,
    step           text,
    variant        text,
    account_id     bigint,
    provider       text,
    attempt        int,
    reason         text,
    provider_ref   text,
    dedupe_key     text UNIQUE,   -- idempotency key: att:/out: per (enrollment, step); sig: per provider reference
    data           jsonb
);
CREATE INDEX events_occurred ON events (occurred_at);
CREATE INDEX events_enrollment ON events (enrollment_id, id);
CREATE INDEX events_person_kind ON events (person_id, kind);

CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- inbound signals (the source's SequenceTriggersResponses) ------------------------
CREATE TABLE inbound_signals (
    id               bigserial PRIMARY KEY,
    provider         text NOT NULL,
    account_id       bigint REFERENCES sender_accounts (id),
    kind             text NOT NULL,          -- REPLIED, FOLLOWED_BACK, CONNECTION_ACCEPTED, ...
    external_id      text NOT NULL,          -- the other party's provider id
    conversation_id  text,
    provider_ref     text NOT NULL,
    text             text,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    source           text NOT NULL DEFAULT 'poll',
    processed_at     timestamptz,
    UNIQUE (provider, provider_ref)
);
CREATE INDEX inbound_unprocessed ON inbound_signals (id) WHERE processed_at IS NULL;

-- consent ----------------------------------------------------------------------
CREATE TABLE suppressions (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('twitter', 'twitter_username', 'linkedin', 'email', 'xmtp',
                                              'person', 'domain', 'global')),
    value       text NOT NULL,
    reason      text NOT NULL,
    source      text NOT NULL DEFAULT 'manual',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, value)
);

-- incremental polling -------------------------------------------------------------
CREATE TABLE provider_cursors (
    account_id  bigint NOT NULL REFERENCES sender_accounts (id),
    stream      text   NOT NULL,
    cursor      text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, stream)
);

-- pacing: one GCRA row per (account, action type) -----------------------------------
CREATE TABLE rate_budgets (
    account_id     bigint NOT NULL REFERENCES sender_accounts (id),
    action_type    text   NOT NULL,
    tat            jsonb  NOT NULL DEFAULT '{}'::jsonb,  -- window name -> theoretical arrival time (epoch s)
    blocked_until  timestamptz,
    last_limit     int,
    last_remaining int,
    last_reset_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, action_type)
);

-- metrics rollups, recomputable from events ---------------------------------------
CREATE TABLE metrics_daily (
    day          date   NOT NULL,
    sequence_id  bigint NOT NULL,
    version_id   bigint NOT NULL,
    step         text   NOT NULL,
    variant      text   NOT NULL,
    account_id   bigint NOT NULL,
    metric       text   NOT NULL,
    value        bigint NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, sequence_id, version_id, step, variant, account_id, metric)
);

-- the source system's names, as views ---------------------------------------------
CREATE VIEW sequence_leads AS SELECT * FROM enrollments;
CREATE VIEW sequence_actions_history AS SELECT * FROM events WHERE enrollment_id IS NOT NULL;
CREATE VIEW sequence_triggers_responses AS SELECT * FROM inbound_signals;
