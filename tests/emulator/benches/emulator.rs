//! Figures for the README: the emulator must never be the bottleneck of a test.
//!
//! 1. A million queued rows: memory, and the latency of `event.offline.get` (limit 50, clear=0)
//!    in the queue itself and over HTTP.
//! 2. Throughput of simple requests (`feature.get`) over loopback keep-alive connections.
//!
//! `cargo bench -p b24-emulator` (or `make bench`). It prints figures; it asserts nothing about
//! time, because a timed assertion on a shared machine is a flaky test, not a measurement.

use b24_emulator::filter::Field;
use b24_emulator::queue::{message_id, Queue, Target};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: usize = 1_000_000;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3;
    (
        at(0.5),
        at(0.99),
        samples.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
    )
}

fn queue_in_process() {
    let before = rss_mib(std::process::id());
    let started = Instant::now();
    let mut q = Queue::new();
    let target = Target {
        app: 0,
        connector: 0,
    };
    for i in 0..ROWS {
        let data = format!("{{\"FIELDS\":{{\"ID\":\"{i}\"}}}}");
        q.produce(
            1_700_000_000 + (i / 1000) as i64,
            target,
            "ONCRMDEALUPDATE",
            message_id("ONCRMDEALUPDATE", &data),
            &data,
            "{\"user_id\":\"1\"}",
        );
    }
    let fill = started.elapsed();
    let rss = rss_mib(std::process::id()) - before;
    let order = [(Field::TimestampX, false)];
    let mut samples = Vec::new();
    let mut n = 0;
    for round in 0..2000 {
        let t = Instant::now();
        let taken = q.take(target, false, &[], &order, 50, false, None, || {
            format!("p{round:031}")
        });
        samples.push(t.elapsed());
        n += taken.rows.len();
    }
    let (p50, p99, max) = percentiles(samples);
    println!(
        "queue (in process): {ROWS} rows queued in {:.2} s, ~{rss:.0} MiB resident",
        fill.as_secs_f64()
    );
    println!("queue (in process): get limit=50 clear=0 x2000 ({n} rows reserved): p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms");
}

struct Emulator {
    child: std::process::Child,
    url: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Emulator {
    let mut child = Command::new(env!("CARGO_BIN_EXE_b24-emulator"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("emulator starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .trim_start_matches("b24-emulator listening on ")
        .to_string();
    Emulator { child, url }
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Value {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn over_http() {
    let emu = start();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let base = emu.url.clone();
    post(
        &client,
        &format!("{base}/_emulator/config"),
        json!({"rate_limit": null, "operating_limit_s": null}),
    )
    .await;
    let token = post(&client, &format!("{base}/_emulator/token"), json!({}))
        .await
        .get("access_token")
        .and_then(Value::as_str)
        .expect("token")
        .to_string();
    post(
        &client,
        &format!("{base}/rest/event.bind"),
        json!({"auth": token, "event": "ONCRMDEALUPDATE", "event_type": "offline"}),
    )
    .await;
    let idle = rss_mib(emu.child.id());
    let started = Instant::now();
    for chunk in 0..(ROWS / 10_000) {
        let items: Vec<Value> = (0..10_000)
            .map(|i| json!({"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": (chunk * 10_000 + i).to_string()}}}))
            .collect();
        post(
            &client,
            &format!("{base}/_emulator/trigger"),
            json!({ "items": items }),
        )
        .await;
    }
    let fill = started.elapsed();
    let full = rss_mib(emu.child.id());
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let r = post(
            &client,
            &format!("{base}/rest/event.offline.get"),
            json!({"auth": token, "clear": 0, "limit": 50}),
        )
        .await;
        samples.push(t.elapsed());
        assert_eq!(r["result"]["events"].as_array().map(Vec::len), Some(50));
    }
    let (p50, p99, max) = percentiles(samples);
    println!(
        "emulator over HTTP: {ROWS} rows triggered in {:.1} s; resident {:.0} MiB idle -> {:.0} MiB with the queue",
        fill.as_secs_f64(),
        idle,
        full
    );
    println!("emulator over HTTP: event.offline.get limit=50 clear=0 x1000 (round trip): p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms");

    // Throughput of simple requests over 32 keep-alive connections.
    let done = Arc::new(AtomicU64::new(0));
    let secs = 5.0;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = client.clone();
        let url = format!("{base}/rest/feature.get");
        let body = json!({"auth": token, "CODE": "rest_offline_extended"}).to_string();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                assert!(r.status().is_success());
                r.bytes().await.expect("body");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let n = done.load(Ordering::Relaxed);
    println!("emulator over HTTP: {n} feature.get requests in {secs:.0} s over 32 connections = {:.0} requests/s (client and server share this machine's cores)", n as f64 / secs);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    queue_in_process();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(over_http());
}
