//! Test harness: starts the real `b24-emulator` binary on a free port, talks to it over HTTP,
//! and kills it when the test is done. Every test starts its own emulator, so tests are
//! independent and run in parallel.
//!
//! With `B24_EMULATOR_CMD` set (words split at whitespace, e.g.
//! `node /path/pkg/emulator/cli.mjs`), every test starts that command instead: the npm
//! package's emulator, the same logic compiled to wasm behind a Node shell. The suite passing
//! against both is what makes them the same emulator.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_b24-emulator");

/// The emulator command other than the native binary, from `B24_EMULATOR_CMD`.
pub fn external() -> Option<Vec<String>> {
    let words: Vec<String> = std::env::var("B24_EMULATOR_CMD")
        .ok()?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (!words.is_empty()).then_some(words)
}

/// The emulator to run: `B24_EMULATOR_CMD` when set, the native binary otherwise.
pub fn command() -> Command {
    match external() {
        Some(words) => {
            let mut c = Command::new(&words[0]);
            c.args(&words[1..]);
            c
        }
        None => Command::new(BIN),
    }
}

/// Whether a test of the native binary alone (TLS) is skipped: the Node shell serves http only.
/// Says so on stderr, so a skipped test is visible in the output.
pub fn native_only(what: &str) -> bool {
    let skip = external().is_some();
    if skip {
        eprintln!("skipped against B24_EMULATOR_CMD: {what} is served by the native binary only");
    }
    skip
}

/// A running emulator process.
pub struct Emu {
    child: Child,
    /// Kept open so the emulator never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT` (or `https://` with `--tls`).
    pub base: String,
    pub http: reqwest::Client,
}

/// A REST answer: HTTP status and the parsed JSON body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    /// Asserts HTTP 200 and returns `result`.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected success, got {self:?}");
        assert!(
            self.body.get("error").is_none(),
            "unexpected error: {self:?}"
        );
        &self.body["result"]
    }

    /// Asserts an error answer with exactly this HTTP status and error code.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "wrong status: {self:?}");
        assert_eq!(
            self.body["error"],
            json!(code),
            "wrong error code: {self:?}"
        );
        assert!(
            self.body["error_description"].is_string(),
            "error without error_description: {self:?}"
        );
        assert!(self.body.get("result").is_none(), "{self:?}");
    }

    /// `result.events` of an `event.offline.get`.
    #[track_caller]
    pub fn events(&self) -> Vec<Value> {
        self.ok()["events"]
            .as_array()
            .expect("events is an array")
            .clone()
    }

    /// `result.process_id` of an `event.offline.get`.
    #[track_caller]
    pub fn process_id(&self) -> Option<String> {
        self.ok()["process_id"].as_str().map(str::to_string)
    }
}

/// An access token issued by `POST /_emulator/token`.
#[derive(Debug, Clone)]
pub struct Token {
    pub access: String,
    pub refresh: String,
    pub application_token: String,
    pub raw: Value,
}

pub fn client(accept_invalid_certs: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(accept_invalid_certs)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

impl Emu {
    pub fn start() -> Emu {
        Emu::start_with(&[])
    }

    /// Spawns the emulator with `--listen 127.0.0.1:0` plus `extra`, and reads the first line.
    pub fn start_with(extra: &[&str]) -> Emu {
        let mut child = command()
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn b24-emulator");
        // Read the first line on a thread, so a binary that never prints fails the test
        // instead of hanging it.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let n = stdout.read_line(&mut line);
            let _ = tx.send((n.map(|n| n > 0).unwrap_or(false), line, stdout));
        });
        let (stdout, line) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((true, line, stdout)) => (stdout, line),
            Ok((false, _, _)) => {
                let _ = child.kill();
                panic!("b24-emulator exited before printing its address");
            }
            Err(_) => {
                let _ = child.kill();
                panic!("b24-emulator printed no address within 20 s");
            }
        };
        let line = line.trim_end_matches(['\r', '\n']);
        let base = line
            .strip_prefix("b24-emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let tls = extra.contains(&"--tls");
        let scheme = if tls {
            "https://127.0.0.1:"
        } else {
            "http://127.0.0.1:"
        };
        let port = base
            .strip_prefix(scheme)
            .unwrap_or_else(|| panic!("first line {line:?} does not start with {scheme}"));
        assert!(
            port.parse::<u16>().map(|p| p > 0).unwrap_or(false),
            "bad port in {line:?}"
        );
        Emu {
            child,
            _stdout: stdout,
            base,
            http: client(tls),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`) and waits for the process to exit.
    pub fn signal(mut self, name: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
        for _ in 0..200 {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("b24-emulator did not exit within 5 s of SIG{name}");
    }

    // ---- control API ----

    /// A control call; returns (status, body).
    pub async fn ctl_raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        self.ctl_at(&self.base, method, path, body).await
    }

    /// A control call on another portal of this emulator.
    pub async fn ctl_at(
        &self,
        origin: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{origin}/_emulator/{path}"));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("control call");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("control body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("control answer is not JSON ({e}): {text:?}"));
        Resp { status, body }
    }

    /// A control POST that must succeed.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self.ctl_raw(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(r.status, 200, "POST /_emulator/{path}: {r:?}");
        r.body
    }

    /// A control GET that must succeed.
    pub async fn get(&self, path: &str) -> Value {
        let r = self.ctl_raw(reqwest::Method::GET, path, None).await;
        assert_eq!(r.status, 200, "GET /_emulator/{path}: {r:?}");
        r.body
    }

    pub async fn config(&self, patch: Value) -> Value {
        self.post("config", patch).await
    }

    pub async fn no_rate_limit(&self) {
        let c = self.config(json!({ "rate_limit": null })).await;
        assert_eq!(c["rate_limit"], Value::Null);
    }

    pub async fn token_with(&self, body: Value) -> Token {
        let raw = self.post("token", body).await;
        Token {
            access: raw["access_token"].as_str().expect("access_token").into(),
            refresh: raw["refresh_token"].as_str().expect("refresh_token").into(),
            application_token: raw["application_token"]
                .as_str()
                .expect("application_token")
                .into(),
            raw,
        }
    }

    /// An administrator's access token of `local.app`.
    pub async fn admin(&self) -> String {
        self.token_with(json!({})).await.access
    }

    pub async fn advance(&self, seconds: f64) {
        self.post("clock", json!({ "advance_s": seconds })).await;
    }

    /// `POST /_emulator/trigger` with one change; returns `queued`.
    pub async fn trigger(&self, body: Value) -> u64 {
        let r = self.post("trigger", body).await;
        r["queued"].as_u64().expect("queued")
    }

    /// Queues the deal updates of `ids` (one item each), as users in the UI.
    pub async fn deal_updates(&self, ids: impl IntoIterator<Item = u64>) -> u64 {
        let items: Vec<Value> = ids
            .into_iter()
            .map(|id| json!({"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": id.to_string()}}}))
            .collect();
        self.trigger(json!({ "items": items })).await
    }

    /// Every row of the queue, every field.
    pub async fn queue(&self) -> Vec<Value> {
        self.get("queue")
            .await
            .as_array()
            .expect("queue array")
            .clone()
    }

    pub async fn stats(&self) -> Value {
        self.get("stats").await
    }

    // ---- REST ----

    /// `POST /rest/METHOD` with a JSON body; `auth` is added when given.
    pub async fn call(&self, method: &str, auth: &str, params: Value) -> Resp {
        self.call_at(&self.base, method, auth, params).await
    }

    /// `call` on another portal of this emulator (`origin` from `POST /_emulator/portals`).
    pub async fn call_at(&self, origin: &str, method: &str, auth: &str, params: Value) -> Resp {
        let mut body = match params {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => panic!("params must be an object, not {other}"),
        };
        if !auth.is_empty() {
            body.insert("auth".into(), json!(auth));
        }
        self.send(
            self.http
                .post(format!("{origin}/rest/{method}"))
                .header("content-type", "application/json")
                .body(Value::Object(body).to_string()),
        )
        .await
    }

    /// Sends a prepared request and parses the JSON answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("REST call");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("REST body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("REST answer is not JSON ({e}), status {status}: {text:?}"));
        Resp { status, body }
    }

    /// Binds `event` offline for the token's application (optionally with a connector).
    pub async fn bind_offline(&self, auth: &str, event: &str, connector: Option<&str>) {
        let mut p = json!({ "event": event, "event_type": "offline" });
        if let Some(c) = connector {
            p["auth_connector"] = json!(c);
        }
        let r = self.call("event.bind", auth, p).await;
        assert_eq!(r.ok(), &json!(true), "{r:?}");
    }

    /// `event.offline.get` with extra params.
    pub async fn offline_get(&self, auth: &str, params: Value) -> Resp {
        self.call("event.offline.get", auth, params).await
    }

    /// `event.offline.list` with extra params.
    pub async fn offline_list(&self, auth: &str, params: Value) -> Resp {
        self.call("event.offline.list", auth, params).await
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The md5 message id the portal computes for a change without its own id.
pub fn msg_id(event: &str, data: &Value) -> String {
    // Computed by the test from the spec's rule, not by the emulator's code.
    md5_hex(format!("{event}|{data}").as_bytes())
}

/// `ID`s of a list of rows, as numbers.
pub fn ids(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .map(|r| {
            r["ID"]
                .as_str()
                .unwrap_or_else(|| panic!("ID is not a string: {r}"))
                .parse()
                .expect("numeric ID")
        })
        .collect()
}

/// Lower-case hex md5.
pub fn md5_hex(input: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A local HTTP receiver for what the portal posts to an app (onOfflineEvent, install and
/// uninstall events): `(content type, the body parsed as a form)` of every POST to `/hook`.
pub async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, std::collections::HashMap<String, String>)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let ctype = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let form: std::collections::HashMap<String, String> =
                    form_urlencoded::parse(body.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                let _ = tx.send((ctype, form));
                "OK"
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), rx)
}
