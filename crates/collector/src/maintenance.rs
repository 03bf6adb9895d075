//! Housekeeping: month partitions (made ahead of time, and on demand for late or early
//! events), retention (old partitions dropped whole, old chain and rollup rows deleted) and
//! the gap sweeper (an event whose predecessor has not arrived within `gap_after` gets status
//! `gap`; an unexplained gap is a `security.violation`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use tokio_util::sync::CancellationToken;

use super::alerts::AlertContext;
use super::config::Retention;
use super::db::{Conn, DbError, Pool};
use super::store::{self, Work};
use super::stream::Hub;

/// First day of the month holding `micros` (UTC).
fn month_of(micros: i64) -> Option<NaiveDate> {
    let dt = chrono::DateTime::from_timestamp_micros(micros)?;
    NaiveDate::from_ymd_opt(dt.year(), dt.month(), 1)
}

/// First day of the month `delta` months from `month`.
pub fn add_months(month: NaiveDate, delta: i32) -> NaiveDate {
    let index = month.year() * 12 + i32::try_from(month.month0()).unwrap_or(0) + delta;
    let m0 = u32::try_from(index.rem_euclid(12)).unwrap_or(0);
    NaiveDate::from_ymd_opt(index.div_euclid(12), m0 + 1, 1).unwrap_or(month)
}

/// The month partitions this process knows exist.
#[derive(Debug, Default, Clone)]
pub struct Partitions {
    known: Arc<Mutex<HashSet<NaiveDate>>>,
}

impl Partitions {
    /// Makes sure every month that `works` touch has its partition. Runs outside the ingest
    /// transaction: creating a partition briefly locks the parent table.
    pub async fn ensure_for(&self, conn: &mut Conn, works: &[&Work]) -> Result<(), DbError> {
        let mut months: HashSet<NaiveDate> = HashSet::new();
        for w in works {
            match w {
                Work::Genuine { events, .. } | Work::Local(events) => {
                    months.extend(
                        events
                            .iter()
                            .filter_map(|e| month_of(e.timestamp.as_micros())),
                    );
                }
                Work::Refused(_) => {}
            }
        }
        // Reports and alerts are stamped now.
        if let Some(m) = month_of(linesentry_event::Timestamp::now().as_micros()) {
            months.insert(m);
        }
        let missing: Vec<NaiveDate> = {
            let known = self
                .known
                .lock()
                .map_err(|_| DbError::Other("poisoned".into()))?;
            months.into_iter().filter(|m| !known.contains(m)).collect()
        };
        for m in missing {
            self.ensure_month(conn, m).await?;
        }
        Ok(())
    }

    pub async fn ensure_month(&self, conn: &mut Conn, month: NaiveDate) -> Result<(), DbError> {
        conn.client
            .execute("SELECT linesentry_ensure_month($1)", &[&month])
            .await?;
        if let Ok(mut known) = self.known.lock() {
            known.insert(month);
        }
        Ok(())
    }

    fn forget(&self, before: NaiveDate) {
        if let Ok(mut known) = self.known.lock() {
            known.retain(|m| *m >= before);
        }
    }
}

/// What the housekeeping task needs.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    pub pool: Pool,
    pub partitions: Partitions,
    pub retention: Retention,
    pub gap_after: Duration,
    pub collector_id: String,
    pub alerts: Arc<AlertContext>,
    pub hub: Hub,
    pub webhooks: Arc<tokio::sync::Notify>,
}

impl Housekeeping {
    /// Partitions for this month and the next `partitions_ahead`.
    pub async fn prepare_partitions(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get().await?;
        let now = month_of(linesentry_event::Timestamp::now().as_micros())
            .ok_or_else(|| DbError::Other("clock out of range".into()))?;
        for i in 0..=self.retention.partitions_ahead {
            self.partitions
                .ensure_month(&mut conn, add_months(now, i32::try_from(i).unwrap_or(0)))
                .await?;
        }
        Ok(())
    }

    /// Drops what is older than the retention: whole month partitions, and the rows of the
    /// other tables older than the first retained month. Returns the dropped partitions.
    pub async fn apply_retention(&self) -> Result<Vec<String>, DbError> {
        let today = Utc::now().date_naive();
        let this_month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today);
        let cutoff = add_months(
            this_month,
            -i32::try_from(self.retention.months).unwrap_or(i32::MAX),
        );
        let cutoff_ts = cutoff
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc())
            .unwrap_or_default();
        let conn = self.pool.get().await?;
        let dropped: Vec<String> = conn
            .client
            .query("SELECT linesentry_drop_months_before($1)", &[&cutoff])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.partitions.forget(cutoff);
        for sql in [
            // Keep each gateway's newest link: the anchor for its next event.
            "DELETE FROM chain_links c WHERE c.received_at < $1 AND c.seq < \
             (SELECT max(d.seq) FROM chain_links d WHERE d.gateway_id = c.gateway_id)",
            "DELETE FROM event_metrics WHERE bucket < $1",
            "DELETE FROM asset_history WHERE at < $1",
            "DELETE FROM quarantine WHERE received_at < $1",
            "DELETE FROM chain_gaps WHERE detected_at < $1",
            "DELETE FROM chain_explanations WHERE recorded_at < $1",
            "DELETE FROM alerts WHERE raised_at < $1",
            "DELETE FROM webhook_outbox WHERE created_at < $1",
        ] {
            conn.client.execute(sql, &[&cutoff_ts]).await?;
        }
        // Minute buckets serve the page's timeline of the last hours; a week is plenty.
        conn.client
            .execute(
                "DELETE FROM event_metrics WHERE granularity = 'minute' \
                 AND bucket < now() - interval '8 days'",
                &[],
            )
            .await?;
        if !dropped.is_empty() {
            tracing::info!(partitions = ?dropped, %cutoff, "retention dropped old months");
        }
        Ok(dropped)
    }

    /// Declares the gaps whose wait is over; returns how many events got status `gap`.
    pub async fn sweep_gaps(&self) -> Result<usize, DbError> {
        let due: Vec<(String, i64)> = {
            let conn = self.pool.get().await?;
            conn.client
                .query(
                    "SELECT gateway_id, seq FROM chain_links WHERE status = 'pending' \
                     AND received_at < now() - make_interval(secs => $1) \
                     ORDER BY received_at LIMIT 500",
                    &[&self.gap_after.as_secs_f64()],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        };
        let mut declared = 0;
        for (gw, seq) in due {
            let mut conn = self.pool.get().await?;
            self.partitions.ensure_for(&mut conn, &[]).await?;
            let new = store::declare_gap(
                &mut conn,
                &gw,
                seq,
                self.gap_after,
                &self.collector_id,
                &self.alerts,
            )
            .await?;
            if let Some(new) = new {
                declared += 1;
                if new.iter().any(|s| s.event.event_type == "alert.raised") {
                    self.webhooks.notify_one();
                }
                self.hub.publish(&new);
            }
        }
        Ok(declared)
    }

    /// Runs every housekeeping job on its period until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let sweep_every =
            (self.gap_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut sweep = tokio::time::interval(sweep_every);
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hourly.tick() => {
                    if let Err(e) = self.prepare_partitions().await {
                        tracing::warn!(error = %e, "partition maintenance failed; retrying next hour");
                    }
                    if let Err(e) = self.apply_retention().await {
                        tracing::warn!(error = %e, "retention failed; retrying next hour");
                    }
                }
                _ = sweep.tick() => {
                    match self.sweep_gaps().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(events = n, "seq gaps declared"),
                        Err(e) => tracing::warn!(error = %e, "gap sweep failed; retrying"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_step_across_years_both_ways() {
        let d = |y, m| NaiveDate::from_ymd_opt(y, m, 1).unwrap();
        assert_eq!(add_months(d(2026, 11), 2), d(2027, 1));
        assert_eq!(add_months(d(2026, 1), -13), d(2024, 12));
        assert_eq!(add_months(d(2026, 5), 0), d(2026, 5));
        assert_eq!(month_of(1_764_243_000_123_456), Some(d(2025, 11)));
    }
}
