//! A minimal W3C WebDriver client (chromedriver driving headless Chromium) so that tests can
//! use the server's HTML pages in a real browser — navigate, fill in forms, click, take
//! screenshots and check accessibility — with no browser-automation crate: plain HTTP to
//! chromedriver through reqwest.

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key under which WebDriver names an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `find` waits for an element to appear.
const FIND_TIMEOUT: Duration = Duration::from_secs(5);

/// A WebDriver error: its `error` code and its message.
#[derive(Debug)]
struct WdError {
    error: String,
    message: String,
}

/// `name` in /usr/bin, else on PATH.
fn find_binary(name: &str) -> Option<PathBuf> {
    let usr = Path::new("/usr/bin").join(name);
    if usr.is_file() {
        return Some(usr);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether Chromium and chromedriver are installed (tests that need a browser skip without).
pub fn available() -> bool {
    find_binary("chromium").is_some() && find_binary("chromedriver").is_some()
}

/// One WebDriver command: its `value`, or the WebDriver error.
async fn command(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let mut request = client.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = response.status();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: reading the response: {e}"));
    let parsed: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {status} not JSON ({e}): {text}"));
    let value = parsed.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(WdError {
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: value["message"].as_str().unwrap_or(&text).to_owned(),
        })
    }
}

/// [`command`], panicking on a WebDriver error.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    match command(client, method.clone(), url, body).await {
        Ok(v) => v,
        Err(e) => panic!("WebDriver {method} {url}: {}: {}", e.error, e.message),
    }
}

/// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
async fn execute_in(
    client: &reqwest::Client,
    session_url: &str,
    script: &str,
    args: Vec<Value>,
) -> Value {
    let url = format!("{session_url}/execute/sync");
    match command(
        client,
        reqwest::Method::POST,
        &url,
        Some(json!({"script": script, "args": args})),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            let head: String = script.chars().take(200).collect();
            panic!("script failed: {}: {}\nscript: {head}", e.error, e.message)
        }
    }
}

/// A headless Chromium driven through its own chromedriver; both end when this is dropped.
pub struct Browser {
    driver: Child,
    client: reqwest::Client,
    port: u16,
    /// `http://127.0.0.1:PORT`
    base: String,
    /// Empty once the session is deleted.
    session: String,
    /// Chromium's profile, fresh for each browser.
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session whose viewport is
    /// `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        Browser::start_with(width, height, true).await
    }

    /// As [`Browser::start`], with JavaScript switched off when `script` is false.
    pub async fn start_with(width: u32, height: u32, script: bool) -> Browser {
        let driver_bin = find_binary("chromedriver")
            .expect("chromedriver not installed (check browser::available())");
        let chromium =
            find_binary("chromium").expect("chromium not installed (check browser::available())");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
            listener.local_addr().expect("local address").port()
        };
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver_bin.display()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let mut browser = Browser {
            driver,
            client,
            port,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            profile,
        };

        // wait for chromedriver to listen
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = browser
                .client
                .get(format!("{}/status", browser.base))
                .send()
                .await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                panic!("chromedriver exited before it was ready: {exit}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready on port {port} after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
                "prefs": {"profile.managed_default_content_settings.javascript": if script { 1 } else { 2 }},
            },
        }}});
        let created = call(
            &browser.client,
            reqwest::Method::POST,
            &format!("{}/session", browser.base),
            Some(capabilities),
        )
        .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"))
            .to_owned();
        browser.set_size(width, height).await;
        browser
    }

    /// `http://127.0.0.1:PORT/session/ID`
    fn session_url(&self) -> String {
        format!("{}/session/{}", self.base, self.session)
    }

    async fn get(&self, path: &str) -> Value {
        call(
            &self.client,
            reqwest::Method::GET,
            &format!("{}{path}", self.session_url()),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        call(
            &self.client,
            reqwest::Method::POST,
            &format!("{}{path}", self.session_url()),
            Some(body),
        )
        .await
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body: `return …`; `arguments[i]` are `args`, where
    /// [`Element::arg`] passes an element) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        execute_in(&self.client, &self.session_url(), script, args).await
    }

    /// The page's visible text (`document.body.innerText`).
    pub async fn page_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    fn element(&self, reference: &Value) -> Element {
        Element {
            client: self.client.clone(),
            session_url: self.session_url(),
            id: reference[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("not an element reference: {reference}"))
                .to_owned(),
        }
    }

    /// The first element matching `css` now, if any.
    async fn try_find(&self, css: &str) -> Option<Element> {
        let url = format!("{}/element", self.session_url());
        let body = json!({"using": "css selector", "value": css});
        match command(&self.client, reqwest::Method::POST, &url, Some(body)).await {
            Ok(reference) => Some(self.element(&reference)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {css:?}: {}: {}", e.error, e.message),
        }
    }

    /// The first element matching `css`, waiting up to 5 s for it to appear; panics with the
    /// page's URL and text when it does not.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.url().await;
        let text: String = self.page_text().await.chars().take(2000).collect();
        panic!(
            "no element matches {css:?} on {url} after {FIND_TIMEOUT:?}; the page reads:\n{text}"
        )
    }

    /// Every element matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .map(|refs| refs.iter().map(|r| self.element(r)).collect())
            .unwrap_or_default()
    }

    /// Whether an element matches `css` now (no waiting).
    pub async fn exists(&self, css: &str) -> bool {
        self.try_find(css).await.is_some()
    }

    /// Waits up to `timeout` for the page's text to contain `text`; panics with the text if not.
    pub async fn wait_for_text(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let page = self.page_text().await;
            if page.contains(text) {
                return;
            }
            if Instant::now() >= deadline {
                let url = self.url().await;
                panic!(
                    "{text:?} did not appear on {url} within {timeout:?}; the page reads:\n{page}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn set_rect(&self, width: i64, height: i64) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    async fn window_rect(&self) -> (i64, i64) {
        let rect = self.get("/window/rect").await;
        (
            rect["width"].as_i64().unwrap_or(0),
            rect["height"].as_i64().unwrap_or(0),
        )
    }

    async fn viewport(&self) -> (i64, i64) {
        let v = self
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        (v[0].as_i64().unwrap_or(0), v[1].as_i64().unwrap_or(0))
    }

    /// Resizes the window so that the viewport is `width`×`height`.
    pub async fn set_size(&self, width: u32, height: u32) {
        let (width, height) = (i64::from(width), i64::from(height));
        self.set_rect(width, height).await;
        let (inner_width, inner_height) = self.viewport().await;
        if (inner_width, inner_height) != (width, height) && inner_width > 0 && inner_height > 0 {
            self.set_rect(2 * width - inner_width, 2 * height - inner_height)
                .await;
        }
    }

    /// Saves a PNG of the viewport at `path` (creating its folder).
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Saves a PNG of the whole page (up to 4000 px high) at `path`: the window is made as
    /// high as the page for the shot, then restored.
    pub async fn full_page_screenshot(&self, path: &Path) {
        let (width, height) = self.window_rect().await;
        let (_, inner_height) = self.viewport().await;
        let page_height = self
            .execute(
                "window.scrollTo(0, 0); return Math.max(document.documentElement.scrollHeight, \
                 document.body ? document.body.scrollHeight : 0);",
                vec![],
            )
            .await
            .as_i64()
            .unwrap_or(0)
            .min(4000);
        if page_height > inner_height {
            self.set_rect(width, page_height + (height - inner_height))
                .await;
        }
        self.screenshot(path).await;
        if page_height > inner_height {
            self.set_rect(width, height).await;
        }
    }

    /// Accessibility problems of the current page, one sentence each: `lang`, landmarks, one
    /// `h1`, heading levels, names of form controls, buttons and links, `img` `alt`, unique
    /// ids, text contrast (WCAG 2.x AA) and controls taken out of the tab order.
    pub async fn accessibility_problems(&self) -> Vec<String> {
        strings(self.execute(A11Y_SCRIPT, vec![]).await)
    }

    /// Presses Tab up to 15 times from the top of the page and reports each element focused
    /// that shows neither an outline nor a box-shadow (its `:focus-visible` style).
    pub async fn focus_visible_problems(&self) -> Vec<String> {
        self.execute(FOCUS_START_SCRIPT, vec![]).await;
        let mut problems = Vec::new();
        for step in 0..15 {
            self.press_key("\u{E004}").await;
            let seen = self.execute(FOCUS_STEP_SCRIPT, vec![json!(step)]).await;
            if seen.is_null() {
                break;
            }
            if let Some(problem) = seen.as_str() {
                problems.push(problem.to_owned());
            }
        }
        self.execute(
            "document.querySelectorAll('[data-webdriver-start]').forEach(e => e.remove());",
            vec![],
        )
        .await;
        problems
    }

    /// Presses and releases one key (a character, or a WebDriver key code such as `\u{E004}`, Tab).
    pub async fn press_key(&self, key: &str) {
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key},
                {"type": "keyUp", "value": key},
            ]}]}),
        )
        .await;
    }

    /// Ends the session (Chromium closes), then chromedriver.
    pub async fn quit(mut self) {
        let url = self.session_url();
        let _ = command(&self.client, reqwest::Method::DELETE, &url, None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium does not die with chromedriver: end the session first (best effort,
        // blocking, over a bare socket since this cannot await), then chromedriver.
        if !self.session.is_empty() {
            delete_session_blocking(self.port, &self.session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/ID` without an async runtime; errors are ignored.
fn delete_session_blocking(port: u16, session: &str) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
    }
}

/// A page element found by [`Browser::find`].
#[derive(Debug, Clone)]
pub struct Element {
    client: reqwest::Client,
    session_url: String,
    /// WebDriver's reference to the element.
    pub id: String,
}

impl Element {
    fn url(&self, path: &str) -> String {
        format!("{}/element/{}{path}", self.session_url, self.id)
    }

    /// This element as an argument of [`Browser::execute`].
    pub fn arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    pub async fn click(&self) {
        call(
            &self.client,
            reqwest::Method::POST,
            &self.url("/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) {
        call(
            &self.client,
            reqwest::Method::POST,
            &self.url("/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn clear(&self) {
        call(
            &self.client,
            reqwest::Method::POST,
            &self.url("/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// The element's rendered text.
    pub async fn text(&self) -> String {
        call(&self.client, reqwest::Method::GET, &self.url("/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// An attribute as written in the HTML (`None` when absent); a form control's current
    /// value is the property: [`Element::prop`]`("value")`.
    pub async fn attr(&self, name: &str) -> Option<String> {
        let value = call(
            &self.client,
            reqwest::Method::GET,
            &self.url(&format!("/attribute/{name}")),
            None,
        )
        .await;
        value.as_str().map(str::to_owned)
    }

    /// A DOM property (`value`, `checked`, …) as JSON.
    pub async fn prop(&self, name: &str) -> Value {
        call(
            &self.client,
            reqwest::Method::GET,
            &self.url(&format!("/property/{name}")),
            None,
        )
        .await
    }

    /// Chooses the `<option>` of this `<select>` whose value is `value` (firing `input` and
    /// `change`); panics if there is none.
    pub async fn select_by_value(&self, value: &str) {
        let script = "const s = arguments[0], v = arguments[1];\
            if (!Array.from(s.options || []).some(o => o.value === v)) return false;\
            s.value = v;\
            s.dispatchEvent(new Event('input', {bubbles: true}));\
            s.dispatchEvent(new Event('change', {bubbles: true}));\
            return true;";
        let chosen = execute_in(
            &self.client,
            &self.session_url,
            script,
            vec![self.arg(), json!(value)],
        )
        .await;
        assert!(chosen == true, "no <option value={value:?}> in this select");
    }
}

/// A JSON array of strings as strings.
fn strings(value: Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Where Tab starts: a focused, unfocusable-by-Tab marker at the top of the body.
const FOCUS_START_SCRIPT: &str = r#"
document.querySelectorAll('[data-webdriver-start]').forEach(e => e.remove());
if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
const start = document.createElement('span');
start.setAttribute('tabindex', '-1');
start.setAttribute('data-webdriver-start', '');
document.body.insertBefore(start, document.body.firstChild);
start.focus();
window.__webdriverSeen = new Set();
"#;

/// After a Tab: null when focus has left the page or come round again; else a problem
/// sentence, or true when the focused element shows its focus.
const FOCUS_STEP_SCRIPT: &str = r#"
const el = document.activeElement;
if (!el || el === document.body || el === document.documentElement || el.hasAttribute('data-webdriver-start')) return null;
const seen = window.__webdriverSeen || (window.__webdriverSeen = new Set());
if (seen.has(el)) return null;
seen.add(el);
const describe = (e) => {
  let s = e.tagName.toLowerCase();
  if (e.id) s += '#' + e.id;
  if (typeof e.className === 'string' && e.className.trim()) s += '.' + e.className.trim().split(/\s+/).join('.');
  const t = (e.textContent || e.value || e.getAttribute('aria-label') || '').replace(/\s+/g, ' ').trim().slice(0, 40);
  if (t) s += ' "' + t + '"';
  return s;
};
const cs = getComputedStyle(el);
const transparent = (c) => c === 'transparent' || /^rgba\(.*,\s*0\)$/.test(c) || /\/\s*0\)$/.test(c);
const outline = cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0 && !transparent(cs.outlineColor);
const shadow = cs.boxShadow && cs.boxShadow !== 'none';
if (outline || shadow) return true;
return 'no visible focus indicator on ' + describe(el) + ' (outline ' + cs.outlineStyle + ' ' + cs.outlineWidth + ' ' + cs.outlineColor + ', box-shadow ' + cs.boxShadow + ')';
"#;

/// The accessibility check: returns an array of problem sentences.
const A11Y_SCRIPT: &str = r#"
const problems = [];
const describe = (el) => {
  let s = el.tagName.toLowerCase();
  if (el.id) s += '#' + el.id;
  if (typeof el.className === 'string' && el.className.trim()) s += '.' + el.className.trim().split(/\s+/).join('.');
  const t = (el.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 40);
  if (t) s += ' "' + t + '"';
  return s;
};
const visible = (el) => {
  const cs = getComputedStyle(el);
  if (cs.display === 'none' || cs.visibility === 'hidden' || cs.visibility === 'collapse') return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0;
};
const textOf = (el) => {
  if (!el) return '';
  let t = (el.textContent || '').trim();
  el.querySelectorAll('img[alt]').forEach(i => { t += ' ' + i.getAttribute('alt').trim(); });
  el.querySelectorAll('svg title').forEach(i => { t += ' ' + (i.textContent || '').trim(); });
  return t.trim();
};
const labelledBy = (el) => {
  const ids = (el.getAttribute('aria-labelledby') || '').trim();
  if (!ids) return '';
  const refs = ids.split(/\s+/).map(id => document.getElementById(id));
  if (refs.some(r => !r)) return '';
  return refs.map(r => textOf(r)).join(' ').trim();
};
const ariaLabel = (el) => (el.getAttribute('aria-label') || '').trim();

// the document's language
if (!(document.documentElement.getAttribute('lang') || '').trim()) problems.push('<html> has no lang attribute');

// landmarks
const mains = document.querySelectorAll('main, [role=main]').length;
if (mains !== 1) problems.push('expected exactly one <main> landmark, found ' + mains);
if (document.querySelectorAll('header, nav, [role=banner], [role=navigation]').length === 0)
  problems.push('no <header> or <nav> landmark');

// headings
const h1s = document.querySelectorAll('h1').length;
if (h1s !== 1) problems.push('expected exactly one <h1>, found ' + h1s);
let previous = 0;
document.querySelectorAll('h1, h2, h3, h4, h5, h6').forEach(h => {
  if (!visible(h)) return;
  const level = parseInt(h.tagName.substring(1), 10);
  if (previous > 0 && level > previous + 1)
    problems.push('heading ' + describe(h) + ' skips a level (after an h' + previous + ')');
  previous = level;
});

// form controls have names
document.querySelectorAll('input, select, textarea').forEach(el => {
  const type = (el.getAttribute('type') || '').toLowerCase();
  if (el.tagName === 'INPUT' && ['hidden', 'submit', 'button', 'reset'].includes(type)) return;
  if (!visible(el)) return;
  const fromLabels = Array.from(el.labels || []).map(l => textOf(l)).join(' ').trim();
  const fromAlt = type === 'image' ? (el.getAttribute('alt') || '').trim() : '';
  if (!fromLabels && !ariaLabel(el) && !labelledBy(el) && !fromAlt)
    problems.push('form control ' + describe(el) + (el.name ? ' (name=' + el.name + ')' : '') + ' has no label');
});

// buttons and links have text
document.querySelectorAll('button, a[href]').forEach(el => {
  if (!visible(el)) return;
  if (!textOf(el) && !ariaLabel(el) && !labelledBy(el))
    problems.push((el.tagName === 'A' ? 'link ' : 'button ') + describe(el) +
      (el.tagName === 'A' ? ' (href=' + el.getAttribute('href') + ')' : '') + ' has no accessible text');
});

// images have alt
document.querySelectorAll('img').forEach(el => {
  if (!el.hasAttribute('alt')) problems.push('image ' + describe(el) + ' (src=' + (el.getAttribute('src') || '') + ') has no alt');
});

// unique ids
const ids = new Map();
document.querySelectorAll('[id]').forEach(el => { if (el.id) ids.set(el.id, (ids.get(el.id) || 0) + 1); });
ids.forEach((n, id) => { if (n > 1) problems.push('id "' + id + '" is used by ' + n + ' elements'); });

// keyboard: no control taken out of the tab order
document.querySelectorAll('a[href], button, input, select, textarea').forEach(el => {
  if (el.tagName === 'INPUT' && (el.getAttribute('type') || '').toLowerCase() === 'hidden') return;
  const t = el.getAttribute('tabindex');
  if (t !== null && parseInt(t, 10) < 0) problems.push(describe(el) + ' has tabindex ' + t + ' (unreachable by keyboard)');
});

// contrast (WCAG 2.x AA)
const canvas = document.createElement('canvas');
canvas.width = 1; canvas.height = 1;
const ctx = canvas.getContext('2d', { willReadFrequently: true });
const parseColor = (c) => {
  const m = /^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:\s*[,\/]\s*([\d.]+%?))?\s*\)$/.exec(c);
  if (m) {
    let a = m[4] === undefined ? 1 : parseFloat(m[4]);
    if (m[4] !== undefined && m[4].endsWith('%')) a = a / 100;
    return [parseFloat(m[1]), parseFloat(m[2]), parseFloat(m[3]), a];
  }
  if (c === 'transparent') return [0, 0, 0, 0];
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = '#000';
  ctx.fillStyle = c;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2], d[3] / 255];
};
const over = (top, bottom) => {
  const a = top[3];
  return [top[0] * a + bottom[0] * (1 - a), top[1] * a + bottom[1] * (1 - a), top[2] * a + bottom[2] * (1 - a), 1];
};
const background = (el) => {
  const layers = [];
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const bg = parseColor(getComputedStyle(e).backgroundColor);
    if (bg[3] > 0) layers.push(bg);
    if (bg[3] >= 1) break;
  }
  let color = [255, 255, 255, 1];
  for (let i = layers.length - 1; i >= 0; i--) color = over(layers[i], color);
  return color;
};
const luminance = (c) => {
  const ch = (v) => { v = v / 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * ch(c[0]) + 0.7152 * ch(c[1]) + 0.0722 * ch(c[2]);
};
const hex = (c) => '#' + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, '0')).join('');
const skip = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'OPTION', 'OPTGROUP', 'TITLE', 'HEAD']);
const elements = document.body ? [document.body, ...document.body.querySelectorAll('*')] : [];
elements.forEach(el => {
  if (skip.has(el.tagName)) return;
  const hasText = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim() !== '');
  if (!hasText || !visible(el)) return;
  if ((el.matches(':disabled') || el.closest('[aria-disabled=true]'))) return;
  const cs = getComputedStyle(el);
  const bg = background(el);
  let fg = parseColor(cs.color);
  if (fg[3] < 1) fg = over(fg, bg);
  const l1 = luminance(fg), l2 = luminance(bg);
  const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  const size = parseFloat(cs.fontSize);
  const bold = parseInt(cs.fontWeight, 10) >= 700;
  const needed = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
  if (ratio + 1e-9 < needed)
    problems.push('contrast ' + ratio.toFixed(2) + ':1 (needs ' + needed + ':1) on ' + describe(el) +
      ' (' + hex(fg) + ' on ' + hex(bg) + ')');
});
return problems;
"#;
