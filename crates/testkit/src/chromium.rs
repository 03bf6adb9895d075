//! Headless Chromium driven over WebDriver (chromedriver on a free loopback port, a private
//! profile directory), for tests of the collector's web page.
//!
//! Debian packages: `chromium` and `chromium-driver`. `LINESENTRY_CHROMEDRIVER` and
//! `LINESENTRY_CHROMIUM` override the paths.

#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn find(env: &str, candidates: &[&str]) -> Option<String> {
    std::env::var(env).ok().or_else(|| {
        candidates
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
            .map(|p| (*p).to_owned())
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session that accepts the test CA's
    /// certificates.
    pub async fn start() -> Self {
        let driver_bin = find(
            "LINESENTRY_CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        )
        .expect("chromedriver not found: install the Debian package chromium-driver");
        let chromium = find(
            "LINESENTRY_CHROMIUM",
            &["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
        )
        .expect("chromium not found: install the Debian package chromium");
        let port = crate::free_port();
        // chromedriver, and the Chromium it starts, run in a process group of their own
        // under a shell that kills the whole group when its stdin closes: when this handle
        // is dropped, or the test process dies, nothing is left running.
        let driver = Command::new("sh")
            .arg("-c")
            .arg("\"$0\" --port=\"$1\" >/dev/null 2>&1 & read _ignored; kill -KILL 0")
            .arg(driver_bin)
            .arg(port.to_string())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        crate::wait_until_async(Duration::from_secs(20), async || {
            http.get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .is_some_and(|r| r.status().is_success())
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("chromedriver did not answer /status within 20 s"));
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-crash-reporter", "--disable-breakpad",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .expect("new session")
            .json_value()
            .await;
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(
            method,
            format!("{}/session/{}{path}", self.base, self.session),
        );
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        req.send().await.expect("WebDriver call").json_value().await
    }

    pub async fn goto(&self, url: &str) {
        let r = self
            .call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
        assert!(r["value"].is_null(), "navigation failed: {r}");
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let r = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({ "script": script, "args": [] })),
            )
            .await;
        r["value"].clone()
    }

    /// Clicks the element `css` selects, as a user would (WebDriver element click: the
    /// element must be visible and not covered).
    pub async fn click(&self, css: &str) {
        let r = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        let id = r["value"]["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {r}"))
            .to_owned();
        let r = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                Some(json!({})),
            )
            .await;
        assert!(r["value"].is_null(), "click on `{css}` failed: {r}");
    }

    /// Sets the browser window's outer size in CSS pixels.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        let r = self
            .call(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "width": width, "height": height })),
            )
            .await;
        assert!(r["value"].is_object(), "window resize failed: {r}");
    }

    /// A PNG screenshot of the viewport, base64.
    pub async fn screenshot_base64(&self) -> String {
        let r = self.call(reqwest::Method::GET, "/screenshot", None).await;
        r["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot: {r}"))
            .to_owned()
    }

    /// Polls `script` until it returns something truthy (not null/false/empty); panics with
    /// the last value after `timeout`.
    pub async fn wait_for(&self, script: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        crate::wait_until_async(timeout, async || {
            let v = self.eval(script).await;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false))
                && !v.as_array().is_some_and(Vec::is_empty)
                && !v.as_str().is_some_and(str::is_empty);
            if truthy {
                return Some(v);
            }
            last = v;
            None
        })
        .await
        .unwrap_or_else(|| panic!("timed out waiting for `{script}`; last value {last}"))
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Wakes the shell, which kills the group: chromedriver and every Chromium process.
        if let Some(mut stdin) = self.driver.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.driver.wait();
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let bytes = self.bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }
}
