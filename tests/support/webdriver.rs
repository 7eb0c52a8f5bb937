//! A headless Chromium driven through a local chromedriver with `fantoccini` (the W3C
//! WebDriver client): enough to load a page, fill a form, click, and read the DOM with
//! scripts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// A chromedriver process and one headless Chromium session.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    /// The session's id, to end it from `Drop` (which cannot wait on the async client).
    session: String,
    client: Client,
}

use super::net::free_port;

/// Where Chromium and chromedriver are, or why they are not usable.
pub(crate) fn find() -> Result<(String, String), String> {
    let which = |names: &[&str]| {
        names.iter().find_map(|n| {
            let out = Command::new("which").arg(n).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    };
    let chromium = which(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("chromium is not installed (apt-get install chromium)")?;
    let driver = which(&["chromedriver"])
        .ok_or("chromedriver is not installed (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width`x`height`.
    pub(crate) async fn start(width: u32, height: u32) -> Result<Self, String> {
        let (chromium, driver) = find()?;
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not answer within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")]
            }
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&base)
            .await
            .map_err(|e| format!("no WebDriver session: {e}"))?;
        let session = client
            .session_id()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no session id")?;
        Ok(Self {
            driver: child,
            base,
            session,
            client,
        })
    }

    /// Opens `url`.
    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("page loads");
    }

    /// Clicks the element matching `css`.
    pub(crate) async fn click(&self, css: &str) {
        let el = self.client.find(Locator::Css(css)).await;
        el.unwrap_or_else(|e| panic!("no element `{css}`: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Replaces the text of the input matching `css`.
    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element `{css}`: {e}"));
        el.clear().await.expect("input clears");
        el.send_keys(text).await.expect("input takes keys");
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub(crate) async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script `{script}`: {e}"))
    }

    /// Polls `script` until it returns a truthy value, up to `timeout`.
    pub(crate) async fn wait_for(&self, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script).await;
            let truthy =
                !(v.is_null() || v == Value::Bool(false) || v == json!("") || v == json!(0));
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "page never satisfied `{script}` within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG screenshot.
    pub(crate) async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    /// Ends the session (which closes Chromium) with a blocking request, so the browser
    /// goes away even when the test panicked, then stops chromedriver.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut conn) = std::net::TcpStream::connect(&addr) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if conn.write_all(request.as_bytes()).is_ok() {
                let _ = conn.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
