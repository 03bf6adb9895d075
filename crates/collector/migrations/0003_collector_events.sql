-- The collector's own events (verification = 'local') are filed under the collector's id
-- (context.collector_id), never under a gateway's: a gateway's rows, rollups and counters
-- are only what it sent. Rows an earlier collector filed under the gateway they were about
-- (alerts, integrity and rejection reports, gateway status) move to the collector; the
-- gateway and station go to event_data.source_gateway / source_station, and the hour and
-- day rollups move with them. The gateways' counters and chains never counted them.
CREATE TEMP TABLE moved ON COMMIT DROP AS
SELECT id, "timestamp" AS ts, event_type, severity, gateway_id AS about, station_id,
       context->>'collector_id' AS collector_id
FROM security_events
WHERE verification = 'local' AND context ? 'collector_id'
  AND gateway_id <> context->>'collector_id';

CREATE TEMP TABLE moved_counts ON COMMIT DROP AS
SELECT g.unit AS granularity, date_trunc(g.unit, m.ts, 'UTC') AS bucket, m.event_type,
       m.severity, m.about, m.collector_id, count(*) AS n
FROM moved m CROSS JOIN (VALUES ('hour'), ('day')) AS g(unit)
GROUP BY 1, 2, 3, 4, 5, 6;

UPDATE event_metrics e SET count = e.count - c.n
FROM (SELECT granularity, bucket, event_type, severity, about, sum(n) AS n
      FROM moved_counts GROUP BY 1, 2, 3, 4, 5) c
WHERE e.granularity = c.granularity AND e.bucket = c.bucket AND e.event_type = c.event_type
  AND e.severity = c.severity AND e.gateway_id = c.about;

DELETE FROM event_metrics WHERE count <= 0;

INSERT INTO event_metrics AS e (granularity, bucket, event_type, severity, gateway_id, count)
SELECT granularity, bucket, event_type, severity, collector_id, sum(n)
FROM moved_counts GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (granularity, bucket, event_type, severity, gateway_id)
DO UPDATE SET count = e.count + EXCLUDED.count;

UPDATE security_events s SET
    gateway_id = m.collector_id,
    station_id = NULL,
    event_data = s.event_data
        || jsonb_strip_nulls(jsonb_build_object('source_gateway', m.about,
                                                'source_station', m.station_id))
FROM moved m
WHERE s.id = m.id AND s."timestamp" = m.ts;
