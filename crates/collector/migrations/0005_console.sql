-- linesentry collector, migration 5: what the console page needs that the event store does
-- not keep in a form it can show quickly.
--
-- 1. Minute rollups for the timeline: event_metrics gains the granularity 'minute', kept
--    in the ingest transaction beside the hour and day buckets (rows.rs); maintenance keeps
--    them for 8 days only.
-- 2. The asset inventory: one row per station a gateway reports on, maintained from the
--    events the ingest transaction inserts (assets.rs), and the history of its changes.
--
-- Independent of migration 4 (the SIEM outbox): either may be applied first.

ALTER TABLE event_metrics DROP CONSTRAINT IF EXISTS event_metrics_granularity_check;
ALTER TABLE event_metrics ADD CONSTRAINT event_metrics_granularity_check
    CHECK (granularity IN ('minute', 'hour', 'day'));

-- One row per (gateway, station). Every column but the keys, the times and the counters is
-- learned from events and may be unknown (NULL). field_times holds, per learned field, the
-- timestamp of the event that set it, so an older event arriving late never overwrites a
-- newer value. changed_fields lists the fields whose value was replaced by a different one
-- (firmware, program, identity...): the page highlights them.
CREATE TABLE assets (
    gateway_id             text        NOT NULL,
    station_id             text        NOT NULL,
    protocol               text,
    address                text,
    vendor                 text,
    product                text,
    product_name           text,
    firmware               text,
    program_checksum       text,
    application_uri        text,
    certificate_thumbprint text,
    security_policy        text,
    status                 text,
    mode                   text,
    reachable              boolean,
    first_seen             timestamptz NOT NULL,
    last_seen              timestamptz NOT NULL,
    events                 bigint      NOT NULL DEFAULT 0,
    field_times            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    changed_fields         text[]      NOT NULL DEFAULT '{}',
    last_change_at         timestamptz,
    PRIMARY KEY (gateway_id, station_id)
);
CREATE INDEX assets_last_seen ON assets (last_seen DESC);

-- Every change of an asset's identity, firmware, program, mode, security policy and
-- reachability, with the event that showed it.
CREATE TABLE asset_history (
    id          bigserial   PRIMARY KEY,
    gateway_id  text        NOT NULL,
    station_id  text        NOT NULL,
    at          timestamptz NOT NULL,
    field       text        NOT NULL,
    value       text,
    previous    text,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, field)
);
CREATE INDEX asset_history_asset ON asset_history (gateway_id, station_id, at DESC, id DESC);
CREATE INDEX asset_history_recorded ON asset_history USING brin (recorded_at);
