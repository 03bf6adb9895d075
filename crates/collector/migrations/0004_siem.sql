-- linesentry collector, migration 4: the SIEM outbox (docs/SIEM.md, "Delivery").
--
-- One row per committed event per [[siem]] destination whose filters it matched, written
-- in the ingest transaction that stored the event, deleted once the destination took it.
-- Rows of one gateway get increasing ids in commit order (the ingest transaction holds
-- the gateway's advisory lock), and each destination is sent in id order, so it sees each
-- gateway's events in the order they were committed. The event itself is read from
-- security_events at delivery time.
CREATE TABLE siem_outbox (
    id          bigserial   PRIMARY KEY,
    destination text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_ts    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX siem_outbox_next ON siem_outbox (destination, id);

-- Delivery state per destination: who sends it (a lease, so that several collectors on one
-- database never send a destination twice at once), counters and the current failure.
CREATE TABLE siem_destinations (
    name                 text        PRIMARY KEY,
    leased_by            text,
    leased_until         timestamptz,
    delivered            bigint      NOT NULL DEFAULT 0,
    failed_attempts      bigint      NOT NULL DEFAULT 0,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    last_error           text,
    last_delivered_at    timestamptz
);
