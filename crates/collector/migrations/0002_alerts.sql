-- linesentry collector, migration 2: alerts raised by the ingest handlers, their
-- acknowledgement by operators, and the outbox of webhook deliveries.

-- One row per alert.raised event (same id and timestamp), with its workflow state.
CREATE TABLE alerts (
    id              uuid        PRIMARY KEY,
    event_ts        timestamptz NOT NULL,
    rule            text        NOT NULL,
    group_key       text        NOT NULL,
    severity        text        NOT NULL,
    source_count    integer     NOT NULL,
    raised_at       timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'acknowledged')),
    acknowledged_by text,
    acknowledged_at timestamptz,
    note            text
);
CREATE INDEX alerts_raised ON alerts (raised_at DESC);
CREATE INDEX alerts_open ON alerts (raised_at DESC) WHERE status = 'open';

-- When each rule last fired for each group (user, source, station...): a rule fires once
-- per window per group, even with several collectors ingesting at once.
CREATE TABLE alert_state (
    rule           text        NOT NULL,
    group_key      text        NOT NULL,
    last_raised_at timestamptz NOT NULL,
    PRIMARY KEY (rule, group_key)
);

-- Webhook calls, written in the transaction that raised the alert and delivered after
-- commit with retry: an alert's notification survives a collector restart.
CREATE TABLE webhook_outbox (
    id              bigserial   PRIMARY KEY,
    webhook         text        NOT NULL,
    alert_id        uuid        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
