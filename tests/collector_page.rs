//! The collector's web page in headless Chromium (WebDriver): an ingested event appears
//! live, coloured by severity; the 24 h counts and the gateway table show what was stored.

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/collector_env.rs"]
mod env;

use std::time::Duration;

use env::{Chain, Env, EnvOptions};
use linesentry::collector::auth::Role;
use linesentry::event::{SecurityEvent, Severity};

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
            signer.seal(&chain.events("setpoint.changed", 3)),
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
        SecurityEvent::new("gw-1", "identity.changed")
            .station("plc-7")
            .data("previous", "ACME PLC 1.2")
            .data("current", "<img src=x onerror=\"document.title='owned'\">"),
    );
    let debug =
        chain.link(SecurityEvent::new("gw-1", "equipment.measurement").severity(Severity::Debug));
    let warn = chain.link(SecurityEvent::new("gw-1", "mode.changed").station("plc-7"));
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
