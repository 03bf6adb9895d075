//! The console: the asset inventory kept in the ingest transaction and its API, the
//! timeline, the chain verdict, and the page in headless Chromium (summaries of every
//! catalogue type, a timeline bar that filters the list, the inventory with a firmware
//! change, the detail's chain verdict, no sideways scrolling at 1024 and 1600 px).

use linesentry_testkit::chromium;
use linesentry_testkit::collector as env;

use std::time::Duration;

use base64::Engine as _;
use env::{Chain, Env, EnvOptions};
use linesentry_collector::auth::Role;
use linesentry_collector::describe;
use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// A station event of `gw-1` at `micros`.
fn at(t: EventType, station: &str, micros: i64) -> SecurityEvent {
    SecurityEvent::new("gw-1", t)
        .station(station)
        .at(Timestamp::from_micros(micros))
}

fn now_micros() -> i64 {
    Timestamp::now().as_micros()
}

/// The lifecycle of one PLC as the agent reports it: status, an identity change, a mode
/// change and a firmware update.
fn plc_story(chain: &mut Chain, base: i64) -> Vec<SecurityEvent> {
    vec![
        chain.link(
            at(EventType::EquipmentStatus, "plc-1", base)
                .data("tag", "state")
                .data("value", 1)
                .data("state", "run"),
        ),
        chain.link(at(EventType::IdentityChanged, "plc-1", base + 1_000).data(
            "changes",
            json!({"vendor": {"value": "ACME Automation", "previous": "ACME"},
                   "product_code": {"value": "X-200", "previous": "X-100"}}),
        )),
        chain.link(
            at(EventType::ModeChanged, "plc-1", base + 2_000)
                .data("tag", "mode")
                .data("value", 2)
                .data("previous", 1)
                .data("state", "PROGRAM")
                .data("previous_state", "RUN")
                .severity(Severity::Error),
        ),
        chain.link(
            at(EventType::FirmwareChanged, "plc-1", base + 3_000)
                .data("value", "7.2.0-x")
                .data("previous", "7.1.0")
                .data("source", "build_info"),
        ),
    ]
}

async fn ingest(env: &Env, events: &[SecurityEvent]) {
    let signer = env.gateway("gw-1").await;
    let gateway = env.token(Role::Gateway, Some("gw-1")).await;
    let (status, reply) = env.post(Some(&gateway), signer.seal(events), true).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_events_maintain_the_asset_inventory_and_its_history_in_the_same_transaction() {
    let env = Env::start(EnvOptions::default()).await;
    let mut chain = Chain::new("gw-1");
    let base = now_micros() - 60_000_000;
    let story = plc_story(&mut chain, base);
    ingest(&env, &story).await;
    // A re-delivery changes nothing: the inventory counts what was inserted.
    ingest(&env, &story[..2]).await;
    let viewer = env.token(Role::Viewer, None).await;

    let (status, body) = env.get(&viewer, "/api/v1/assets").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "{body}");
    let a = &body["assets"][0];
    assert_eq!(
        (a["gateway_id"].as_str(), a["station_id"].as_str()),
        (Some("gw-1"), Some("plc-1"))
    );
    assert_eq!(a["vendor"], "ACME Automation");
    assert_eq!(a["product"], "X-200");
    assert_eq!(a["firmware"], "7.2.0-x");
    assert_eq!(a["mode"], "PROGRAM");
    assert_eq!(a["status"], "run");
    assert_eq!(a["events"], 4, "{a}");
    let changed: Vec<&str> = a["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(changed, ["firmware", "product", "vendor"]);

    let (status, h) = env
        .get(&viewer, "/api/v1/assets/gw-1/plc-1/history?limit=10")
        .await;
    assert_eq!(status, 200, "{h}");
    let fields: Vec<(String, Option<String>, Option<String>)> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["field"].as_str().unwrap().to_owned(),
                r["previous"].as_str().map(str::to_owned),
                r["value"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(fields.len(), 4, "{h}");
    assert_eq!(
        fields[0],
        (
            "firmware".into(),
            Some("7.1.0".into()),
            Some("7.2.0-x".into())
        ),
        "newest first"
    );
    assert!(fields.contains(&("mode".into(), Some("RUN".into()), Some("PROGRAM".into()))));

    // What PostgreSQL holds is what the API said.
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT firmware, events, (SELECT count(*) FROM asset_history) FROM assets",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        ("7.2.0-x".to_owned(), 4, 4)
    );

    // Bad input: bounded limits, unknown parameters, unknown assets, roles.
    assert_eq!(env.get(&viewer, "/api/v1/assets?limit=999999").await.0, 400);
    assert_eq!(env.get(&viewer, "/api/v1/assets?sort=1;DROP").await.0, 400);
    assert_eq!(
        env.get(&viewer, "/api/v1/assets/gw-1/nope/history").await.0,
        404
    );
    assert_eq!(
        env.get(&viewer, "/api/v1/assets/gw-1'%20OR%20'1'='1/plc-1/history")
            .await
            .0,
        404
    );
    let gateway = env.token(Role::Gateway, Some("gw-1")).await;
    assert_eq!(env.get(&gateway, "/api/v1/assets").await.0, 403);
    assert_eq!(env.get(&gateway, "/api/v1/timeline").await.0, 403);
    assert_eq!(env.get(&viewer, "/api/v1/timeline?period=2h").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verdict_names_the_predecessor_and_whether_its_hash_matches() {
    let env = Env::start(EnvOptions::default()).await;
    let mut chain = Chain::new("gw-1");
    let events = chain.events(EventType::SetpointChanged, 2);
    // seq 4 arrives without seq 3: pending.
    chain.link(SecurityEvent::new("gw-1", EventType::SetpointChanged));
    let waiting = chain.link(SecurityEvent::new("gw-1", EventType::SetpointChanged));
    ingest(
        &env,
        &[events[0].clone(), events[1].clone(), waiting.clone()],
    )
    .await;
    let viewer = env.token(Role::Viewer, None).await;
    let (status, c) = env
        .get(&viewer, &format!("/api/v1/events/{}/chain", events[1].id))
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["verification"], "verified");
    assert_eq!(c["seq"], 2);
    assert_eq!(c["predecessor"]["seq"], 1);
    assert_eq!(c["matches_predecessor"], true);
    let (_, c) = env
        .get(&viewer, &format!("/api/v1/events/{}/chain", waiting.id))
        .await;
    assert_eq!(c["verification"], "pending", "{c}");
    assert_eq!(c["predecessor"], Value::Null);
    assert!(c["explanation"].as_str().unwrap().contains("seq 3"), "{c}");
}

/// Starts Chromium on the page with a viewer token and waits until it is live.
async fn open_page(env: &Env) -> chromium::Browser {
    let viewer = env.token(Role::Viewer, None).await;
    let browser = chromium::Browser::start().await;
    browser.set_window_size(1600, 1000).await;
    browser.goto(&format!("{}/#token={viewer}", env.base)).await;
    browser
        .wait_for(
            "return document.getElementById('conn').dataset.state === 'live' && document.body.dataset.refreshed",
            WAIT,
        )
        .await;
    browser
}

/// Sets the list's filters in the page and applies them; waits for the reload.
async fn apply_filters(browser: &chromium::Browser, min_severity: &str) {
    browser
        .eval(&format!(
            "document.getElementById('events').dataset.loaded = ''; \
             document.getElementById('f-severity').value = '{min_severity}'; \
             document.querySelector('#filters button[type=submit]').click(); return true"
        ))
        .await;
    browser
        .wait_for(
            "return document.getElementById('events').dataset.loaded",
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_summary_of_every_catalogue_type_and_hostile_data_as_text() {
    let env = Env::start(EnvOptions::default()).await;
    let mut chain = Chain::new("gw-1");
    let base = now_micros() - 120_000_000;
    let mut events: Vec<SecurityEvent> = EventType::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let i = i64::try_from(i).unwrap();
            chain.link(
                at(*t, "press-a", base + i * 1000)
                    .severity(Severity::Warn)
                    .data("tag", "die_temp_sp")
                    .data("value", 2100)
                    .data("previous", 1500)
                    .data("reason", "<b>bold</b>"),
            )
        })
        .collect();
    let long = "<script>document.title='owned'</script>".repeat(200);
    let mut unknown = at(EventType::SetpointChanged, "press-a", base + 100_000)
        .data("note", long.clone())
        .data("html", "<img src=x onerror=\"document.title='owned'\">");
    unknown.event_type = "vendor.custom_thing".into();
    unknown = unknown.data("label", "<i>italic</i> <b>bold</b>");
    events.push(chain.link(unknown));
    ingest(&env, &events).await;

    let browser = open_page(&env).await;
    apply_filters(&browser, "").await;
    for e in &events {
        let want = describe::summary(e);
        let got = browser
            .wait_for(
                &format!(
                    "const r = document.querySelector('#events tr.event[data-id=\"{}\"] td.summary .text'); return r && r.textContent",
                    e.id
                ),
                WAIT,
            )
            .await;
        assert_eq!(got, want.as_str(), "{}", e.event_type);
        if let Some(entry) = linesentry_event::catalog_entry(&e.event_type) {
            let links = browser
                .eval(&format!(
                    "return [...document.querySelectorAll('#events tr.event[data-id=\"{}\"] a.attack')].map(a => a.href)",
                    e.id
                ))
                .await;
            assert_eq!(
                links.as_array().map(Vec::len),
                Some(entry.attack.len()),
                "{}: {links}",
                e.event_type
            );
        }
    }
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('#app script, #app img, #app b, #app i').length === 0 \
                 && document.title !== 'owned'"
            )
            .await,
        true,
        "event data never becomes markup"
    );
    // The detail shows the hostile data formatted, as text, and the page still fits.
    browser
        .click(&format!(
            "#events tr.event[data-id=\"{}\"] td.summary",
            events.last().unwrap().id
        ))
        .await;
    let data = browser
        .wait_for(
            "const p = document.querySelector('#detail pre.data'); return p && p.textContent",
            WAIT,
        )
        .await;
    assert!(data
        .as_str()
        .unwrap()
        .contains("<script>document.title='owned'</script>"));
    assert_eq!(
        browser.eval("return document.title !== 'owned' && document.querySelectorAll('#detail script, #detail img').length === 0").await,
        true
    );
    assert_no_sideways_scroll(&browser, 1024).await;
    browser.close().await;
}

/// Every section, and the page, fit the window: nothing scrolls sideways.
async fn assert_no_sideways_scroll(browser: &chromium::Browser, width: u32) {
    browser.set_window_size(width, 900).await;
    let overflow = browser
        .wait_for(
            &format!(
                "if (Math.abs(window.outerWidth - {width}) > 2) return null; \
                 const chart = document.getElementById('timeline'); \
                 if (Number(chart.dataset.width) !== Math.max(300, chart.clientWidth)) return null; \
                 const doc = document.documentElement; \
                 const bad = [...document.querySelectorAll('section:not([hidden])')] \
                   .filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.id); \
                 return {{ page: doc.scrollWidth - doc.clientWidth, sections: bad, inner: window.innerWidth }}"
            ),
            WAIT,
        )
        .await;
    assert_eq!(
        overflow["page"], 0,
        "page overflows at {width}px: {overflow}"
    );
    assert_eq!(
        overflow["sections"],
        json!([]),
        "sections overflow at {width}px: {overflow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_the_database_counts_and_a_bar_click_lists_that_interval() {
    let env = Env::start(EnvOptions::default()).await;
    let mut chain = Chain::new("gw-1");
    let minute = 60_000_000;
    let now = now_micros();
    let early = (now - 10 * minute) / minute * minute + 20_000_000;
    let late = (now - 3 * minute) / minute * minute + 20_000_000;
    let mut events = Vec::new();
    for (i, sev) in [Severity::Warn, Severity::Error, Severity::Info]
        .iter()
        .enumerate()
    {
        let i = i64::try_from(i).unwrap();
        events.push(
            chain.link(at(EventType::SetpointChanged, "press-a", early + i * 1000).severity(*sev)),
        );
    }
    for i in 0..5 {
        events.push(
            chain.link(
                at(EventType::EquipmentStatus, "press-b", late + i * 1000)
                    .data("state", "run")
                    .severity(Severity::Info),
            ),
        );
    }
    ingest(&env, &events).await;
    let browser = open_page(&env).await;

    // Every bar carries the count PostgreSQL has for its minute (severity info and above,
    // the page's default filter).
    let bars = browser
        .wait_for(
            "const b = [...document.querySelectorAll('#timeline .bar')]; \
             return b.length === 60 && b.map(g => [g.dataset.start, Number(g.dataset.total)])",
            WAIT,
        )
        .await;
    let db = env.db().await;
    let mut nonzero = 0;
    for bar in bars.as_array().unwrap() {
        let start = chrono::DateTime::parse_from_rfc3339(bar[0].as_str().unwrap()).unwrap();
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM security_events WHERE \"timestamp\" >= $1 \
                 AND \"timestamp\" < $1 + interval '1 minute' AND severity <> 'debug'",
                &[&start],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(bar[1].as_i64(), Some(n), "bar {bar}");
        nonzero += i64::from(n > 0);
    }
    assert!(nonzero >= 2, "{bars}");
    let early_bar = bars
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b[1] == 3)
        .unwrap_or_else(|| panic!("no bar of 3 events: {bars}"))[0]
        .as_str()
        .unwrap()
        .to_owned();
    let stacked = browser
        .eval(&format!(
            "return [...document.querySelectorAll('#timeline .bar[data-start=\"{early_bar}\"] rect[data-severity]')].map(r => r.dataset.severity + '=' + r.dataset.count).sort()"
        ))
        .await;
    assert_eq!(stacked, json!(["error=1", "info=1", "warn=1"]));

    // A click on the bar lists exactly that minute's events.
    browser
        .eval("document.getElementById('events').dataset.loaded = ''; return true")
        .await;
    browser
        .click(&format!(
            "#timeline .bar[data-start=\"{early_bar}\"] rect.hit"
        ))
        .await;
    browser
        .wait_for(
            "return document.getElementById('events').dataset.loaded",
            WAIT,
        )
        .await;
    let listed = browser
        .eval("return [...document.querySelectorAll('#events tr.event')].map(r => r.dataset.id).sort()")
        .await;
    let mut want: Vec<String> = events[..3].iter().map(|e| e.id.to_string()).collect();
    want.sort();
    assert_eq!(listed, json!(want));
    assert_eq!(
        browser
            .eval("return document.getElementById('interval').hidden")
            .await,
        false
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_lists_stations_with_identity_highlights_the_firmware_change_and_shows_history(
) {
    let env = Env::start(EnvOptions::default()).await;
    let mut chain = Chain::new("gw-1");
    let base = now_micros() - 30_000_000;
    let mut events = plc_story(&mut chain, base);
    events.push(
        chain.link(SecurityEvent::new("gw-1", EventType::AgentStarted).data(
            "station_list",
            json!([{"id": "plc-1", "protocol": "opcua", "address": "opc.tcp://10.0.0.5:4840"},
                   {"id": "press-2", "protocol": "modbus_tcp", "address": "10.0.0.6:502"}]),
        )),
    );
    ingest(&env, &events).await;
    let browser = open_page(&env).await;
    let row = "#assets tr[data-gateway=\"gw-1\"][data-station=\"plc-1\"]";
    let cells = browser
        .wait_for(
            &format!(
                "const r = document.querySelector('{row}'); return r && [...r.cells].map(c => c.textContent)"
            ),
            WAIT,
        )
        .await;
    let text = cells.to_string();
    for want in [
        "opc.tcp://10.0.0.5:4840",
        "ACME Automation",
        "X-200",
        "7.2.0-x",
        "PROGRAM",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    assert_eq!(
        browser
            .eval(&format!("return document.querySelector('{row} td.f-firmware').classList.contains('changed')"))
            .await,
        true,
        "the firmware change is highlighted"
    );
    assert_eq!(
        browser
            .eval(&format!(
                "return document.querySelector('{row} td.f-status').classList.contains('changed')"
            ))
            .await,
        false
    );
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#assets tr.asset').length")
            .await,
        2
    );
    browser.click(&format!("{row} td.station")).await;
    let history = browser
        .wait_for(
            "const r = document.querySelector('#asset-history-rows tr[data-field=\"firmware\"]'); \
             return r && [r.classList.contains('watched'), ...[...r.cells].map(c => c.textContent)]",
            WAIT,
        )
        .await;
    assert_eq!(history[0], true);
    assert_eq!(history[2], "firmware");
    assert_eq!(history[3], "7.1.0");
    assert_eq!(history[4], "7.2.0-x");
    assert_screenshots(&browser, "inventory").await;
    browser.close().await;
}

/// Screenshots at 1024 and 1600 px for a person to look at (in the target directory), and
/// no sideways scrolling at either width.
async fn assert_screenshots(browser: &chromium::Browser, name: &str) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    for width in [1024, 1600] {
        assert_no_sideways_scroll(browser, width).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(browser.screenshot_base64().await)
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let _ = std::fs::write(dir.join(format!("{name}-{width}.png")), png);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_shows_the_chain_verdict_the_data_and_the_correlated_events() {
    let env = Env::start(EnvOptions::default()).await;
    let mut chain = Chain::new("gw-1");
    let outage = uuid::Uuid::now_v7();
    let base = now_micros() - 20_000_000;
    let down = chain.link(
        at(EventType::DeviceUnreachable, "press-a", base)
            .correlation(outage)
            .data("failed_polls", 3)
            .data("reason", "timed out after 500 ms"),
    );
    let up = chain.link(
        at(EventType::DeviceRecovered, "press-a", base + 5_000_000)
            .correlation(outage)
            .data("down_for_s", 5.0),
    );
    ingest(&env, &[down.clone(), up.clone()]).await;
    let browser = open_page(&env).await;
    browser
        .wait_for(
            &format!(
                "return document.querySelector('#events tr.event[data-id=\"{}\"]') !== null",
                up.id
            ),
            WAIT,
        )
        .await;
    browser
        .click(&format!(
            "#events tr.event[data-id=\"{}\"] td.summary",
            up.id
        ))
        .await;
    let verdict = browser
        .wait_for(
            "const v = document.getElementById('chain-verdict'); return v && [v.dataset.verdict, v.textContent]",
            WAIT,
        )
        .await;
    assert_eq!(verdict[0], "verified");
    let text = verdict[1].as_str().unwrap();
    assert!(text.contains("prev_hash is the hash of seq 1"), "{text}");
    assert!(text.contains("prev_hash matchesyes"), "{text}");
    let correlated = browser
        .wait_for(
            "return [...document.querySelectorAll('#correlated button')].map(b => b.dataset.id)",
            WAIT,
        )
        .await;
    assert_eq!(correlated, json!([down.id.to_string()]));
    let raw = browser
        .eval("return document.querySelector('#detail pre.raw').textContent")
        .await;
    let raw: Value = serde_json::from_str(raw.as_str().unwrap()).unwrap();
    assert_eq!(raw["id"], up.id.to_string());
    assert_eq!(raw["seq"], 2);
    // Following the correlated event opens its detail: the first of the chain.
    browser.click("#correlated button").await;
    browser
        .wait_for(
            &format!(
                "return document.getElementById('detail').dataset.id === '{}' && document.getElementById('chain-verdict').textContent.includes('first event')",
                down.id
            ),
            WAIT,
        )
        .await;
    assert_screenshots(&browser, "detail").await;
    browser.close().await;
}

/// The issue's benchmark: with 1,000,000 events and 500 assets in the store, every API call
/// the page makes at load answers within 100 ms at the 95th percentile. Slow to set up
/// (about a minute): `cargo nextest run -p linesentry-collector --test it --run-ignored only
/// -E 'test(/console_api_calls/)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: inserts a million events"]
async fn console_api_calls_of_a_page_load_stay_under_100_ms_p95_with_a_million_events() {
    let env = Env::start(EnvOptions::default()).await;
    let db = env.db().await;
    let setup = std::time::Instant::now();
    db.batch_execute(
        r#"
        SELECT linesentry_ensure_month((now() - interval '7 days')::date);
        INSERT INTO security_events (id, event_type, event_data, context, "timestamp", severity,
            gateway_id, station_id, seq, verification)
        SELECT gen_random_uuid(),
               (ARRAY['setpoint.changed', 'equipment.status', 'mode.changed', 'quality.check',
                      'device.unreachable', 'equipment.measurement'])[1 + i % 6],
               jsonb_build_object('tag', 't' || (i % 50), 'value', i, 'previous', i - 1),
               '{}'::jsonb,
               now() - make_interval(secs => i * 0.6048),
               (ARRAY['info', 'warn', 'error', 'debug'])[1 + i % 4],
               'gw-' || (i % 10), 'st-' || (i % 500), i, 'verified'
        FROM generate_series(1, 1000000) AS i;
        INSERT INTO event_metrics (granularity, bucket, event_type, severity, gateway_id, count)
        SELECT g.unit, date_trunc(g.unit, e."timestamp", 'UTC'), e.event_type, e.severity,
               e.gateway_id, count(*)
        FROM security_events e CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g(unit)
        GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (granularity, bucket, event_type, severity, gateway_id)
        DO UPDATE SET count = event_metrics.count + EXCLUDED.count;
        INSERT INTO assets (gateway_id, station_id, protocol, address, vendor, product, firmware,
            program_checksum, status, mode, reachable, first_seen, last_seen, events,
            changed_fields)
        SELECT 'gw-' || (i % 10), 'st-' || i, 'modbus_tcp', '10.0.' || (i / 250) || '.' || (i % 250) || ':502',
               'ACME', 'X-' || (i % 7), '7.' || (i % 3) || '.0', md5(i::text), 'run', 'RUN', true,
               now() - interval '7 days', now(), 2000,
               CASE WHEN i % 25 = 0 THEN ARRAY['firmware'] ELSE '{}'::text[] END
        FROM generate_series(0, 499) AS i;
        INSERT INTO asset_history (gateway_id, station_id, at, field, value, previous, event_id,
            event_type)
        SELECT 'gw-' || (i % 10), 'st-' || (i % 500), now() - make_interval(secs => i), 'firmware',
               '7.1.0', '7.0.0', gen_random_uuid(), 'firmware.changed'
        FROM generate_series(1, 20000) AS i;
        ANALYZE;
        "#,
    )
    .await
    .unwrap();
    eprintln!("setup: {:.1} s", setup.elapsed().as_secs_f64());
    let viewer = env.token(Role::Viewer, None).await;
    let calls = [
        "/api/v1/whoami",
        "/api/v1/events?min_severity=info&limit=200",
        "/api/v1/events?limit=200&event_types=agent.buffer_high,agent.buffer_dropped,agent.buffer_reset,forward.upstream_down",
        "/api/v1/timeline?period=1h&min_severity=info",
        "/api/v1/timeline?period=7d&min_severity=info",
        "/api/v1/stats?period=24h",
        "/api/v1/assets?limit=1000",
        "/api/v1/assets/gw-5/st-5/history?limit=200",
        "/api/v1/attack?period=24h",
        "/api/v1/gateways",
        "/api/v1/alerts?status=open&limit=50",
    ];
    let mut report = Vec::new();
    for path in calls {
        let mut ms: Vec<f64> = Vec::new();
        for _ in 0..40 {
            let t = std::time::Instant::now();
            let (status, body) = env.get(&viewer, path).await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{path}: {body}");
        }
        ms.sort_by(f64::total_cmp);
        let p95 = ms[ms.len() * 95 / 100 - 1];
        report.push(format!(
            "{path}: p50 {:.1} ms, p95 {p95:.1} ms",
            ms[ms.len() / 2]
        ));
        eprintln!("{}", report.last().unwrap());
        assert!(p95 < 100.0, "{path}: p95 {p95:.1} ms");
    }
    let (_, assets) = env.get(&viewer, "/api/v1/assets?limit=1000").await;
    assert_eq!(assets["count"], 500);
}

/// A burst from the stream: every event is received or reported missed, the table keeps
/// the newest 500. The figures (rate, longest main-thread task) are printed; the thresholds
/// are the benchmark's below, since under the whole suite on two cores neither the sender
/// nor the page gets the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_burst_is_received_or_reported_missed_and_the_table_keeps_the_newest() {
    stream_burst(false).await;
}

/// The issue's benchmark: the page keeps up with 1,000 events/s from the stream and no task
/// holds its main thread for half a second (it never freezes). Run alone:
/// `--run-ignored only -E 'test(/keeps_up/)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: needs the machine to itself"]
async fn the_page_keeps_up_with_a_thousand_events_a_second_without_freezing() {
    stream_burst(true).await;
}

async fn stream_burst(strict: bool) {
    let env = Env::start(EnvOptions::default()).await;
    let browser = open_page(&env).await;
    browser
        .eval(
            "window.__long = []; \
             new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }) \
               .observe({ type: 'longtask' }); \
             return true",
        )
        .await;
    let signer = env.gateway("gw-1").await;
    let gateway = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let (batches, per_batch): (u64, u64) = (20, 250);
    let started = std::time::Instant::now();
    for b in 0..batches {
        let events: Vec<SecurityEvent> = (0..per_batch)
            .map(|i| {
                chain.link(
                    SecurityEvent::new("gw-1", EventType::EquipmentStatus)
                        .station("press-a")
                        .data("state", "run")
                        .data("n", b * per_batch + i),
                )
            })
            .collect();
        let (status, reply) = env.post(Some(&gateway), signer.seal(&events), true).await;
        assert_eq!(status, 200, "{reply}");
        // 250 events every 250 ms: 1,000 events/s.
        let due = Duration::from_millis(250 * (b + 1));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let sent = batches * per_batch;
    let rate = f64::from(u32::try_from(sent).unwrap()) / started.elapsed().as_secs_f64();
    let stats = browser
        .wait_for(
            &format!(
                "const s = window.linesentry.stats(); return s.received + s.missed >= {sent} && s"
            ),
            WAIT,
        )
        .await;
    // Long tasks (over 50 ms on the main thread) are what a person feels as a freeze; frame
    // timing is no measure in headless Chromium, which throttles an unseen page's frames.
    let long = browser
        .eval(
            "const l = window.__long; \
             return { count: l.length, max: l.length ? Math.max(...l) : 0, total: l.reduce((a, b) => a + b, 0) }",
        )
        .await;
    eprintln!("{sent} events at {rate:.0}/s: page {stats}, long tasks {long}");
    if strict {
        assert!(rate > 800.0, "the test sent only {rate:.0} events/s");
        assert!(
            long["max"].as_f64().unwrap() < 500.0,
            "the page froze: {long}"
        );
    }
    assert_eq!(
        stats["received"].as_u64().unwrap() + stats["missed"].as_u64().unwrap(),
        sent,
        "{stats}"
    );
    assert!(stats["drawn"].as_u64().unwrap() > 0);
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#events tr.event').length")
            .await,
        500,
        "the newest 500 are kept"
    );
    browser.close().await;
}
