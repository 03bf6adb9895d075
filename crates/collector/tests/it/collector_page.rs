//! The collector's web page in headless Chromium (WebDriver): an ingested event appears
//! live, coloured by severity; the 24 h counts and the gateway table show what was stored.

use linesentry_testkit::chromium;
use linesentry_testkit::collector as env;

use std::time::Duration;

use env::{Chain, Env, EnvOptions};
use linesentry_collector::auth::Role;
use linesentry_event::{EventType, SecurityEvent, Severity};

const WAIT: Duration = Duration::from_secs(20);

fn row_exists(id: &uuid::Uuid) -> String {
    format!("return document.querySelector('#events tr.event[data-id=\"{id}\"]') !== null")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_event_appears_live_on_the_page_with_its_severity_colour_and_counts() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let gateway = env.token(Role::Gateway, Some("gw-1")).await;
    let viewer = env.token(Role::Viewer, None).await;
    let mut chain = Chain::new("gw-1");
    let (status, _) = env
        .post(
            Some(&gateway),
            signer.seal(&chain.events(EventType::SetpointChanged, 3)),
            true,
        )
        .await;
    assert_eq!(status, 200);

    let browser = chromium::Browser::start().await;
    browser.goto(&format!("{}/#token={viewer}", env.base)).await;
    browser
        .wait_for(
            "return document.getElementById('conn').dataset.state === 'live'",
            WAIT,
        )
        .await;
    assert_eq!(
        browser.eval("return location.hash").await,
        "",
        "the token leaves the address bar"
    );
    assert_eq!(
        browser
            .eval("return document.getElementById('who').textContent")
            .await,
        "viewer-test (viewer)"
    );

    // Live: a critical event, a debug one (below the default filter) and one whose data
    // looks like markup.
    let critical = chain.link(
        SecurityEvent::new("gw-1", EventType::IdentityChanged)
            .station("plc-7")
            .data("previous", "ACME PLC 1.2")
            .data("current", "<img src=x onerror=\"document.title='owned'\">"),
    );
    let debug = chain.link(
        SecurityEvent::new("gw-1", EventType::EquipmentMeasurement).severity(Severity::Debug),
    );
    let warn = chain.link(SecurityEvent::new("gw-1", EventType::ModeChanged).station("plc-7"));
    let (status, reply) = env
        .post(
            Some(&gateway),
            signer.seal(&[critical.clone(), debug.clone(), warn.clone()]),
            true,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    browser.wait_for(&row_exists(&critical.id), WAIT).await;
    browser.wait_for(&row_exists(&warn.id), WAIT).await;
    assert_eq!(
        browser.eval(&row_exists(&debug.id)).await,
        false,
        "below the min severity filter"
    );
    let colour = browser
        .eval(&format!(
            "return getComputedStyle(document.querySelector('#events tr.event[data-id=\"{}\"] .sev')).backgroundColor",
            critical.id
        ))
        .await;
    assert_eq!(colour, "rgb(127, 29, 29)");
    let warn_colour = browser
        .eval(&format!(
            "return getComputedStyle(document.querySelector('#events tr.event[data-id=\"{}\"] .sev')).backgroundColor",
            warn.id
        ))
        .await;
    assert_eq!(warn_colour, "rgb(217, 119, 6)");
    assert_eq!(browser.eval("return document.querySelector('#events img') === null && document.title !== 'owned'").await, true);

    // Counts of the last 24 h and the gateway table, after a refresh.
    browser
        .eval("window.linesentry.refresh(); return true")
        .await;
    let count = browser
        .wait_for(
            "const c = document.querySelector('#counts tr[data-type=\"identity.changed\"] td:nth-child(2)'); return c && c.textContent",
            WAIT,
        )
        .await;
    assert_eq!(count, "1");
    assert_eq!(
        browser
            .eval("return document.querySelector('#counts tr[data-type=\"setpoint.changed\"] td:nth-child(2)').textContent")
            .await,
        "3"
    );
    // The first refresh ran when the page opened; wait for one that saw all six events.
    let gw = browser
        .wait_for(
            "const r = document.querySelector('#gateways tr[data-gateway=\"gw-1\"]'); \
             return r && r.cells[3].textContent === '6' && [...r.cells].map(c => c.textContent)",
            WAIT,
        )
        .await;
    assert_eq!(gw[0], "gw-1");
    assert_eq!(gw[4], "0", "seq gaps: {gw}");
    browser.close().await;
}

/// Runs `fetch` in the page with the page's own token and waits for the status.
async fn fetch_status(browser: &chromium::Browser, method: &str, path: &str) -> serde_json::Value {
    browser
        .eval(&format!(
            "window.__status = null; \
             fetch('{path}', {{ method: '{method}', headers: {{ 'Authorization': 'Bearer ' + \
             sessionStorage.getItem('linesentry.token'), 'Content-Type': 'application/json' }}, \
             body: '{{}}' }}).then(r => window.__status = r.status, e => window.__status = String(e)); \
             return true"
        ))
        .await;
    browser.wait_for("return window.__status", WAIT).await
}

/// Ingests one equipment fault, which raises an alert (built-in rule equipment-fault);
/// returns the alert's id.
async fn raise_alert(env: &Env) -> uuid::Uuid {
    let signer = env.gateway("gw-1").await;
    let gateway = env.token(Role::Gateway, Some("gw-1")).await;
    let fault = Chain::new("gw-1")
        .link(SecurityEvent::new("gw-1", EventType::EquipmentFault).station("press-01"));
    let (status, reply) = env.post(Some(&gateway), signer.seal(&[fault]), true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        env.wait_count("SELECT count(*) FROM alerts WHERE status = 'open'", 1)
            .await,
        1
    );
    env.db()
        .await
        .query_one("SELECT id FROM alerts WHERE rule = 'equipment-fault'", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acknowledges_an_alert_from_the_page_and_a_viewer_cannot() {
    let env = Env::start(EnvOptions::default()).await;
    let viewer = env.token(Role::Viewer, None).await;
    let operator = env.token(Role::Operator, None).await;
    let alert = raise_alert(&env).await;
    let db = env.db().await;
    let row = format!("#alerts tr[data-id=\"{alert}\"]");
    let alert_status = || async {
        db.query_one(
            "SELECT status, acknowledged_by FROM alerts WHERE id = $1",
            &[&alert],
        )
        .await
        .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
        .unwrap()
    };

    // A viewer sees the alert without a button, and the collector refuses the action.
    let browser = chromium::Browser::start().await;
    browser.goto(&format!("{}/#token={viewer}", env.base)).await;
    browser
        .wait_for(
            &format!("return document.querySelector('{row}') !== null"),
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval(&format!(
                "return document.querySelectorAll('{row} button').length"
            ))
            .await,
        0,
        "a viewer is offered the acknowledge button"
    );
    assert_eq!(
        fetch_status(&browser, "POST", &format!("/api/v1/alerts/{alert}/ack")).await,
        403
    );
    assert_eq!(alert_status().await, ("open".to_owned(), None));

    // An operator clicks Acknowledge: the row goes, and PostgreSQL has it acknowledged.
    browser.goto("about:blank").await;
    browser
        .goto(&format!("{}/#token={operator}", env.base))
        .await;
    browser
        .wait_for(
            "return document.getElementById('who').textContent === 'operator-test (operator)'",
            WAIT,
        )
        .await;
    browser
        .wait_for(
            &format!("return document.querySelector('{row} button') !== null"),
            WAIT,
        )
        .await;
    browser.click(&format!("{row} button")).await;
    browser
        .wait_for(
            &format!("return document.querySelector('{row}') === null"),
            WAIT,
        )
        .await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM alerts WHERE status = 'acknowledged'",
            1
        )
        .await,
        1
    );
    assert_eq!(
        alert_status().await,
        ("acknowledged".to_owned(), Some("operator-test".to_owned()))
    );
    // Recorded as an event through the collector's own ingest queue, a moment later.
    let recorded = env
        .wait_count(
            &format!(
                "SELECT count(*) FROM security_events WHERE event_type = 'alert.acknowledged' \
                 AND correlation_id = '{alert}' AND user_id = 'operator-test'"
            ),
            1,
        )
        .await;
    assert_eq!(recorded, 1, "the acknowledgement is recorded as an event");

    // A refresh does not bring it back: it is no longer open.
    let before = browser.eval("return document.body.dataset.refreshed").await;
    browser
        .eval("window.linesentry.refresh(); return true")
        .await;
    browser
        .wait_for(
            &format!("return document.body.dataset.refreshed !== {before}"),
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval(&format!("return document.querySelector('{row}') === null"))
            .await,
        true
    );
    browser.close().await;
}
