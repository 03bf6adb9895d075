//! Zero false positives: ten minutes of normal production (accelerated: 100 ms polls, no
//! sleeping) on every shipped profile, through all rules with each profile's tuning, raise
//! no warn-or-higher event. Defect-free production, so a failed check cannot be blamed on
//! the rules; everything else moves as in the demo (measurements, counters, part ids).

use std::path::Path;
use std::sync::Arc;

use linesentry_agent::rules::StationRules;
use linesentry_agent::runtime::rule_tags;
use linesentry_agent::source::generator::Generator;
use linesentry_agent::source::PollResult;
use linesentry_event::{Severity, Timestamp};

#[test]
fn ten_minutes_of_normal_production_raise_no_warning_on_any_shipped_profile() {
    let config = linesentry_agent::config::load(&Path::new(repo!()).join("config/demo.toml"))
        .expect("demo config loads");
    let severities = Arc::new(config.severity.clone());
    let start = Timestamp::now().as_micros();
    let polls = 10 * 60 * 10; // ten minutes at 100 ms
    let mut total = 0;
    for (i, station) in config.stations.iter().enumerate() {
        let mut rules = StationRules::new(
            Arc::from("gw-benign"),
            Arc::from(station.id.as_str()),
            severities.clone(),
            rule_tags(&station.profile),
        )
        .with_settings(station.rule_settings());
        let mut generator =
            Generator::steady(&station.id, &station.profile, i as u64 + 7).with_defect_rate(0.0);
        for n in 0..polls {
            let now = Timestamp::from_micros(start + n * 100_000);
            let poll = PollResult {
                readings: generator.sample(now),
                reachable: true,
                ..PollResult::default()
            };
            let events = rules.observe(&poll, now);
            total += events.len();
            let loud: Vec<_> = events
                .iter()
                .filter(|e| e.severity >= Severity::Warn)
                .map(|e| format!("{} {} {:?}", e.event_type, e.severity, e.event_data))
                .collect();
            assert!(
                loud.is_empty(),
                "{} at poll {n}: false positives {loud:#?}",
                station.id
            );
        }
    }
    assert!(
        total > 0,
        "normal production still reports (status, checks, measurements)"
    );
}
