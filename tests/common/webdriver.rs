//! A thin W3C WebDriver client (<https://www.w3.org/TR/webdriver2/>) over `ureq`, for the
//! browser tests: it starts Debian's `chromedriver` on a free port, opens one headless Chromium
//! session with a fresh profile (JavaScript on or off), and offers the few commands the tests
//! use. Every page source and element text it reads is kept, for "the page never showed the
//! value" checks. Dropping it deletes the session (Chromium quits) and kills and reaps
//! `chromedriver`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key an element reference is sent under (W3C WebDriver § 12.1, "web element identifier").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long [`Browser::find`] waits for an element to show up.
const FIND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a navigation may take ([`Browser::wait_path`], and the session's page-load timeout).
const LOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long chromedriver may take to answer `/status`, and any one command to come back
/// (a new session starts Chromium: seconds on a busy two-core machine).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// A WebDriver error answer: its `error` code (§ 6.6, e.g. `no such element`) and message.
#[derive(Debug)]
pub struct WebDriverError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// One headless Chromium session driven through its own `chromedriver`.
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT/session/ID`: every command's URL starts with it.
    session: String,
    driver: Child,
    /// The Chromium profile and chromedriver's log: fresh for every browser, removed with it.
    dir: tempfile::TempDir,
    /// Every page source and element text read so far.
    seen: Mutex<String>,
}

impl Browser {
    /// A browser with JavaScript enabled.
    pub fn start() -> Self {
        Self::launch(true)
    }

    /// A browser with JavaScript disabled by the profile's content settings (what a user who
    /// switched JavaScript off has): pages must work from their HTML alone.
    pub fn without_javascript() -> Self {
        Self::launch(false)
    }

    fn launch(javascript: bool) -> Self {
        crate::common::require_tool("chromedriver");
        crate::common::require_tool("chromium");
        let dir = tempfile::Builder::new()
            .prefix("keyport-browser")
            .tempdir()
            .unwrap();
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DRIVER_TIMEOUT))
            .build()
            .into();
        let mut browser = Self {
            agent,
            session: format!("http://127.0.0.1:{port}"),
            driver,
            dir,
            seen: Mutex::new(String::new()),
        };
        browser.wait_ready();
        let profile = browser.dir.path().join("profile");
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1024,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if !javascript {
            options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "timeouts": {"pageLoad": LOAD_TIMEOUT.as_millis() as u64, "script": 10_000},
        }}});
        let url = format!("{}/session", browser.session);
        let created = browser
            .request("POST", &url, Some(&capabilities))
            .unwrap_or_else(|e| panic!("no WebDriver session: {e:?}\n{}", browser.driver_log()));
        let id = created["sessionId"].as_str().unwrap().to_string();
        browser.session = format!("{url}/{id}");
        browser
    }

    /// Polls chromedriver's `/status` (§ 8.3) until it says it is ready.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DRIVER_TIMEOUT;
        let url = format!("{}/status", self.session);
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited ({status}):\n{}", self.driver_log());
            }
            if let Ok(value) = self.request("GET", &url, None)
                && value["ready"] == true
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {DRIVER_TIMEOUT:?}:\n{}",
                self.driver_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// chromedriver's log so far (for failure messages).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Sends one command; its `value` on success, the WebDriver error otherwise. A transport
    /// failure (chromedriver gone) is an error with status 0.
    fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, WebDriverError> {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Content-Type", "application/json")
            .body(body.map(Value::to_string).unwrap_or_default())
            .unwrap();
        let mut response = self.agent.run(request).map_err(|e| WebDriverError {
            status: 0,
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let mut answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
        let value = answer["value"].take();
        if status == 200 {
            return Ok(value);
        }
        Err(WebDriverError {
            status,
            error: value["error"].as_str().unwrap_or_default().to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// A command of this session (`path` after `/session/ID`), which must succeed.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e:?}"))
    }

    fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        // A POST always carries a body, `{}` when the command takes no parameters (§ 6.3).
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        self.request(method, &format!("{}{path}", self.session), body.as_ref())
    }

    /// Navigates to `url` and waits for the page to load (§ 10.1).
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current page's URL.
    pub fn current_url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The current URL's path: no scheme, authority, query or fragment.
    pub fn current_path(&self) -> String {
        let url = self.current_url();
        let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        path.split(['?', '#']).next().unwrap_or("/").to_string()
    }

    /// Waits (up to [`LOAD_TIMEOUT`]) until the current URL's path is `path`: a click that
    /// submits a form returns before the answer's page has necessarily loaded.
    pub fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + LOAD_TIMEOUT;
        loop {
            let current = self.current_path();
            if current == path {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "still on {current}, not {path}, after {LOAD_TIMEOUT:?}; the page:\n{}",
                    self.source()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The id of the first element matching `css`, waiting up to [`FIND_TIMEOUT`] for one to
    /// appear; panics with the page's source when none does.
    pub fn find(&self, css: &str) -> String {
        self.try_find(css, FIND_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no element matches {css:?} on {} within {FIND_TIMEOUT:?}; the page:\n{}",
                self.current_url(),
                self.source()
            )
        })
    }

    /// The id of the first element matching `css`, if one appears within `wait`.
    pub fn try_find(&self, css: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let query = json!({"using": "css selector", "value": css});
            match self.try_command("POST", "/element", Some(query)) {
                Ok(element) => return Some(element[ELEMENT].as_str().unwrap().to_string()),
                Err(e) if e.error == "no such element" => {}
                Err(e) => panic!("finding {css:?}: {e:?}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether an element matches `css` right now (no waiting).
    pub fn exists(&self, css: &str) -> bool {
        self.try_find(css, Duration::ZERO).is_some()
    }

    /// Runs element command `path` (after `/element/ID`) on the element matching `css`,
    /// finding it again if the page replaced it meanwhile (a stale reference, § 12.3).
    fn on_element(&self, css: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            let id = self.find(css);
            match self.try_command(method, &format!("/element/{id}{path}"), body.clone()) {
                Ok(value) => return value,
                Err(e) if e.error == "stale element reference" && Instant::now() < deadline => {}
                Err(e) => panic!("{method} {path} on {css:?}: {e:?}"),
            }
        }
    }

    /// Clears the field matching `css` and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "POST", "/clear", None);
        self.on_element(css, "POST", "/value", Some(json!({ "text": text })));
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        self.on_element(css, "POST", "/click", None);
    }

    /// Picks the option with value `value` of the `<select>` matching `css` (WebDriver has no
    /// select command: clicking an option selects it, § 12.5.1).
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// The rendered text of the element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let text = self.on_element(css, "GET", "/text", None);
        let text = text.as_str().unwrap().to_string();
        self.seen.lock().unwrap().push_str(&text);
        text
    }

    /// The `name` property of the element matching `css` (e.g. a field's `value`).
    pub fn property(&self, css: &str, name: &str) -> Value {
        let value = self.on_element(css, "GET", &format!("/property/{name}"), None);
        self.seen.lock().unwrap().push_str(&value.to_string());
        value
    }

    /// Whether the element matching `css` is shown (§ 12.4.1 "Element Displayedness").
    pub fn displayed(&self, css: &str) -> bool {
        self.on_element(css, "GET", "/displayed", None)
            .as_bool()
            .unwrap()
    }

    /// Where the element is and how big, in CSS pixels: (x, width).
    pub fn rect(&self, css: &str) -> (f64, f64) {
        let rect = self.on_element(css, "GET", "/rect", None);
        (rect["x"].as_f64().unwrap(), rect["width"].as_f64().unwrap())
    }

    /// Grants the page's origin `permission` (e.g. `clipboard-read`), through the Permissions
    /// spec's WebDriver extension.
    pub fn grant(&self, permission: &str) {
        let body = json!({"descriptor": {"name": permission}, "state": "granted"});
        self.command("POST", "/permissions", Some(body));
    }

    /// The current page's source, as the browser serializes its DOM.
    pub fn source(&self) -> String {
        let source = self.command("GET", "/source", None);
        let source = source.as_str().unwrap().to_string();
        self.seen.lock().unwrap().push_str(&source);
        source
    }

    /// Fails if any page source or text read so far contained `value`.
    pub fn assert_never_showed(&self, value: &str) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.contains(value), "a page showed {value}");
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Resizes the window to `width` × `height` CSS pixels; returns the size it got.
    pub fn set_window_size(&self, width: u32, height: u32) -> (u64, u64) {
        let size = json!({ "width": width, "height": height });
        let rect = self.command("POST", "/window/rect", Some(size));
        (
            rect["width"].as_u64().unwrap(),
            rect["height"].as_u64().unwrap(),
        )
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub fn execute(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.command("POST", "/execute/sync", Some(body))
    }

    /// Runs `script` in the page, which calls `arguments[arguments.length - 1]` with its
    /// result when it is done (for promises, e.g. the clipboard's).
    pub fn execute_async(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.command("POST", "/execute/async", Some(body))
    }

    /// Every cookie of the current page's origin.
    pub fn cookies(&self) -> Vec<Value> {
        self.command("GET", "/cookie", None)
            .as_array()
            .unwrap()
            .clone()
    }

    /// The directory this browser's profile and log live in.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session quits Chromium (§ 8.2); chromedriver then goes too.
        if self.session.contains("/session/") {
            let _ = self.request("DELETE", &self.session, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A TCP port nothing listens on right now (the kernel's pick for `127.0.0.1:0`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
