-- linesentry collector, migration 1: the event store, its rollups, gateways and their
-- keys, the per-gateway hash chain, quarantined batches and API tokens.
--
-- Every statement here is static. Partitions are made by linesentry_ensure_month(), which
-- builds its DDL from a date with format('%I', '%L'): no caller-supplied text reaches SQL.

-- The original design's security_events table, extended with the edge fields
-- (gateway_id, station_id, seq, prev_hash) and the collector's verdict on the chain
-- (verification). Partitioned by month on "timestamp" (UTC). A unique key on a partitioned
-- table must include the partition column: (id, "timestamp") is the de-duplication key.
-- An event is re-delivered with the same id and timestamp, so ON CONFLICT DO NOTHING makes a
-- second delivery a no-op; per-gateway seq uniqueness is kept in chain_links, which is not
-- partitioned.
CREATE TABLE security_events (
    id             uuid        NOT NULL,
    event_type     text        NOT NULL,
    event_data     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    context        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    "timestamp"    timestamptz NOT NULL,
    correlation_id uuid,
    user_id        text,
    source_ip      inet,
    severity       text        NOT NULL
        CHECK (severity IN ('debug', 'info', 'warn', 'error', 'critical')),
    processed      boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    gateway_id     text        NOT NULL,
    station_id     text,
    seq            bigint,
    prev_hash      text,
    -- verified: prev_hash is the hash of the gateway's event seq-1 (or seq 1 with no
    -- predecessor); pending: seq-1 not received yet; broken: seq-1 received and its hash
    -- differs, or seq reused with other content; gap: seq-1 never arrived (see chain_gaps)
    -- or the chain restarted; local: made by the collector itself, no chain.
    verification   text        NOT NULL
        CHECK (verification IN ('verified', 'pending', 'broken', 'gap', 'local')),
    PRIMARY KEY (id, "timestamp")
) PARTITION BY RANGE ("timestamp");

-- Newest first with a unique tie-breaker: the order of every list and of keyset pages.
CREATE INDEX security_events_time ON security_events ("timestamp" DESC, id DESC);
CREATE INDEX security_events_type ON security_events (event_type, "timestamp" DESC);
CREATE INDEX security_events_severity ON security_events (severity, "timestamp" DESC);
CREATE INDEX security_events_gateway ON security_events (gateway_id, "timestamp" DESC);
CREATE INDEX security_events_station ON security_events (station_id, "timestamp" DESC)
    WHERE station_id IS NOT NULL;
CREATE INDEX security_events_user ON security_events (user_id, "timestamp" DESC)
    WHERE user_id IS NOT NULL;
CREATE INDEX security_events_correlation ON security_events (correlation_id)
    WHERE correlation_id IS NOT NULL;
-- Containment (event_data @> '{"tag": "x"}'): jsonb_path_ops is smaller and faster for @>.
CREATE INDEX security_events_data ON security_events USING gin (event_data jsonb_path_ops);
CREATE INDEX security_events_unverified ON security_events (verification, "timestamp" DESC)
    WHERE verification IN ('pending', 'broken', 'gap');

-- Rollups the collector maintains in the ingest transaction (hour and day buckets, UTC):
-- stats are read from here, never by grouping security_events.
CREATE TABLE event_metrics (
    granularity text        NOT NULL CHECK (granularity IN ('hour', 'day')),
    bucket      timestamptz NOT NULL,
    event_type  text        NOT NULL,
    severity    text        NOT NULL,
    gateway_id  text        NOT NULL,
    count       bigint      NOT NULL,
    PRIMARY KEY (granularity, bucket, event_type, severity, gateway_id)
);

-- Registered gateways and what the collector knows of them.
CREATE TABLE gateways (
    gateway_id         text        PRIMARY KEY,
    description        text        NOT NULL DEFAULT '',
    -- SHA-256 of the DER client certificate a gateway may present instead of a token.
    client_cert_sha256 bytea,
    enabled            boolean     NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_seen          timestamptz,
    last_seq           bigint,
    events_total       bigint      NOT NULL DEFAULT 0,
    gaps               bigint      NOT NULL DEFAULT 0,
    gaps_unexplained   bigint      NOT NULL DEFAULT 0,
    missing_events     bigint      NOT NULL DEFAULT 0,
    broken             bigint      NOT NULL DEFAULT 0,
    rejected_batches   bigint      NOT NULL DEFAULT 0,
    -- From the retained MQTT status topic (online / offline, version, config digest).
    status             text,
    status_detail      jsonb,
    status_at          timestamptz
);

-- Ed25519 public keys; key_id = first 16 hex digits of SHA-256 of the key. Several keys
-- per gateway allow rotation; a revoked key verifies nothing.
CREATE TABLE gateway_keys (
    gateway_id text        NOT NULL REFERENCES gateways (gateway_id),
    key_id     text        NOT NULL,
    public_key bytea       NOT NULL CHECK (length(public_key) = 32),
    added_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    PRIMARY KEY (gateway_id, key_id)
);

-- One row per received gateway event: the chain as the collector has seen it. The primary
-- key makes a seq unique per gateway across all partitions.
CREATE TABLE chain_links (
    gateway_id  text        NOT NULL,
    seq         bigint      NOT NULL,
    hash        bytea       NOT NULL,
    prev_hash   bytea,
    status      text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_ts    timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX chain_links_pending ON chain_links (received_at) WHERE status = 'pending';
-- For retention only: rows arrive in received_at order, so a BRIN index is tiny and costs
-- the ingest path next to nothing.
CREATE INDEX chain_links_received ON chain_links USING brin (received_at);

-- Seqs that never arrived, found when a pending event's predecessor stayed missing.
CREATE TABLE chain_gaps (
    id           bigserial   PRIMARY KEY,
    gateway_id   text        NOT NULL,
    first_seq    bigint      NOT NULL,
    last_seq     bigint      NOT NULL,
    -- The event whose predecessor is missing.
    next_seq     bigint      NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    -- Why the seqs are missing when the gateway said so (agent.buffer_dropped,
    -- forward.dead_lettered, agent.buffer_reset), or 'first contact'.
    explanation  text,
    explained_by uuid,
    violation_id uuid,
    UNIQUE (gateway_id, next_seq)
);

-- Seq ranges a gateway reported as lost or set aside.
CREATE TABLE chain_explanations (
    gateway_id  text        NOT NULL,
    first_seq   bigint      NOT NULL,
    last_seq    bigint      NOT NULL,
    reason      text        NOT NULL,
    event_id    uuid        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, event_id, first_seq)
);
CREATE INDEX chain_explanations_range ON chain_explanations (gateway_id, first_seq, last_seq);

-- Batches refused as not genuine or not valid, kept byte for byte for investigation.
-- digest (SHA-256 of the body) makes a re-delivered bad batch a no-op.
CREATE TABLE quarantine (
    id          uuid        PRIMARY KEY,
    digest      bytea       NOT NULL UNIQUE,
    received_at timestamptz NOT NULL DEFAULT now(),
    transport   text        NOT NULL,
    origin      text        NOT NULL,
    gateway_id  text,
    kind        text        NOT NULL,
    reason      text        NOT NULL,
    body        bytea       NOT NULL
);
CREATE INDEX quarantine_received ON quarantine (received_at);

-- API tokens: only the SHA-256 of a token is stored. A gateway token may only ingest, and
-- only for its own gateway.
CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('gateway', 'viewer', 'operator', 'admin')),
    gateway_id   text        REFERENCES gateways (gateway_id),
    token_sha256 bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK ((role = 'gateway') = (gateway_id IS NOT NULL))
);

-- Creates the month partition that holds month_start (UTC) if it does not exist yet.
CREATE FUNCTION linesentry_ensure_month(month_start date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date_trunc('month', month_start)::date;
    part text := format('security_events_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    -- Two collectors may ask at once: serialise, then look.
    PERFORM pg_advisory_xact_lock(hashtextextended('linesentry.partitions', 0));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF security_events FOR VALUES FROM (%L) TO (%L)',
            part,
            (first_day::timestamp AT TIME ZONE 'UTC'),
            ((first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN part;
END
$$;

-- Drops every month partition that ends on or before cutoff; returns the dropped names.
CREATE FUNCTION linesentry_drop_months_before(cutoff date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('linesentry.partitions', 0));
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'security_events'::regclass
          AND c.relname ~ '^security_events_y[0-9]{4}m[0-9]{2}$'
          AND (to_date(substr(c.relname, 18), 'YYYY"m"MM') + interval '1 month') <= cutoff
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;
