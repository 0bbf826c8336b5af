//! The central OAuth server: at the first portal's origin (`oauth_server` in `GET /` and the
//! portals list), it refreshes the grants of every portal of the process and answers for the
//! portal that issued them; cloud portals' install events name it, a box portal (config
//! `oauth: "portal"`) names and serves its own `/oauth/`. Client secrets registered at install
//! must be presented.

mod common;

use common::{receiver, Emu, Resp};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

type Inbox = tokio::sync::mpsc::UnboundedReceiver<(String, HashMap<String, String>)>;

const APP: &str = "app.fleet";
const SECRET: &str = "s3cret-of-the-app";

async fn next(rx: &mut Inbox) -> HashMap<String, String> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("receiver open")
        .1
}

fn origin(p: &Value) -> String {
    p["origin"].as_str().expect("origin").to_string()
}

async fn portals(emu: &Emu, body: Value) -> Vec<Value> {
    emu.post("portals", body).await["portals"]
        .as_array()
        .expect("portals")
        .clone()
}

/// Installs `APP` at `at` (with `extra` fields) and returns the ONAPPINSTALL form it posted.
async fn install(
    emu: &Emu,
    at: &str,
    handler: &str,
    extra: Value,
    rx: &mut Inbox,
) -> HashMap<String, String> {
    let mut body = json!({ "client_id": APP, "handler": handler });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = emu.ctl_at(at, Method::POST, "install", Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["delivered"], json!(true), "{r:?}");
    next(rx).await
}

/// `GET {server}/oauth/token/?grant_type=refresh_token&refresh_token=..&{extra}`.
async fn refresh(emu: &Emu, server: &str, token: &str, extra: &str) -> Resp {
    emu.send(emu.http.get(format!(
        "{server}/oauth/token/?grant_type=refresh_token&refresh_token={token}{extra}"
    )))
    .await
}

fn credentials(secret: &str) -> String {
    format!("&client_id={APP}&client_secret={secret}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_server_refreshes_every_portals_grants_for_that_portal() {
    let emu = Emu::start();
    let central = emu.base.clone();
    let root = emu.send(emu.http.get(format!("{central}/"))).await;
    assert_eq!(root.body["oauth_server"], json!(central));
    let made = portals(&emu, json!({ "count": 3 })).await;
    let listed = emu.get("portals").await;
    assert_eq!(listed["oauth_server"], json!(central));
    for p in listed["portals"].as_array().unwrap() {
        assert_eq!(p["server_endpoint"], json!(format!("{central}/rest/")));
        assert_eq!(p["oauth"], json!("cloud"));
    }
    let (url, mut rx) = receiver().await;
    let mut forms = Vec::new();
    for p in &made {
        let form = install(
            &emu,
            &origin(p),
            &url,
            json!({ "client_secret": SECRET }),
            &mut rx,
        )
        .await;
        // Every cloud portal's install event names the central server.
        assert_eq!(form["auth[server_endpoint]"], format!("{central}/rest/"));
        assert_eq!(
            form["auth[client_endpoint]"],
            format!("{}/rest/", origin(p))
        );
        forms.push(form);
    }
    let central_domain = central.strip_prefix("http://").unwrap();
    for (p, form) in made.iter().zip(&forms) {
        let at = origin(p);
        let r = refresh(
            &emu,
            &central,
            &form["auth[refresh_token]"],
            &credentials(SECRET),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        // The answer is for the portal that issued the token, from the central server.
        assert_eq!(r.body["member_id"], p["member_id"]);
        assert_eq!(r.body["client_endpoint"], json!(format!("{at}/rest/")));
        assert_eq!(r.body["server_endpoint"], json!(format!("{central}/rest/")));
        assert_eq!(r.body["domain"], json!(central_domain));
        assert_eq!(r.body["expires_in"], json!(3600));
        assert_eq!(r.body["user_id"], json!(1));
        assert_eq!(r.body["status"], json!("L"));
        assert!(r.body["scope"].is_string());
        let access = r.body["access_token"].as_str().unwrap();
        emu.call_at(&at, "profile", access, json!({})).await.ok();
        // Good once: the spent token is refused, wherever it is presented.
        let again = refresh(
            &emu,
            &central,
            &form["auth[refresh_token]"],
            &credentials(SECRET),
        )
        .await;
        again.err(400, "invalid_grant");
        let s = emu.ctl_at(&at, Method::GET, "stats", None).await.body;
        assert_eq!(
            (&s["refreshes"], &s["refreshes_refused"]),
            (&json!(1), &json!(0))
        );
    }
    // The spent tokens were refused at the central server's origin.
    assert_eq!(emu.stats().await["refreshes_refused"], json!(3));

    // A cloud portal's own /oauth/token/ passes the exchange on to the central server (as the
    // cloud proxies it), for any portal's token; POST with a form works as GET does.
    let (a, b) = (origin(&made[0]), origin(&made[1]));
    let t = emu
        .ctl_at(&a, Method::POST, "token", Some(json!({ "user_id": 4 })))
        .await
        .body;
    assert_eq!(t["server_endpoint"], json!(format!("{central}/rest/")));
    let r = emu
        .send(
            emu.http
                .post(format!("{b}/oauth/token/"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=refresh_token&client_id=local.app&client_secret=any&refresh_token={}",
                    t["refresh_token"].as_str().unwrap()
                )),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["member_id"], made[0]["member_id"]);
    assert_eq!(r.body["client_endpoint"], json!(format!("{a}/rest/")));
    assert_eq!(r.body["server_endpoint"], json!(format!("{central}/rest/")));
    assert_eq!(r.body["user_id"], json!(4));

    // Unknown tokens, deleted portals.
    refresh(&emu, &central, "no-such-token", "")
        .await
        .err(400, "invalid_grant");
    let r2 = r.body["refresh_token"].as_str().unwrap().to_string();
    emu.ctl_at(&a, Method::POST, "portal", Some(json!({ "deleted": true })))
        .await;
    refresh(&emu, &central, &r2, "")
        .await
        .err(400, "invalid_grant");
    emu.ctl_at(
        &a,
        Method::POST,
        "portal",
        Some(json!({ "deleted": false })),
    )
    .await;
    assert_eq!(refresh(&emu, &central, &r2, "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_client_secret_must_be_presented() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let central = emu.base.clone();
    let made = portals(&emu, json!({ "count": 1 })).await;
    let at = origin(&made[0]);
    let (url, mut rx) = receiver().await;
    let form = install(&emu, &at, &url, json!({ "client_secret": SECRET }), &mut rx).await;
    let token = &form["auth[refresh_token]"];
    for (extra, why) in [
        (credentials("wrong"), "a wrong secret"),
        (format!("&client_id={APP}"), "no secret"),
        (format!("&client_secret={SECRET}"), "no client id"),
        (
            format!("&client_id=other.app&client_secret={SECRET}"),
            "another app's client id",
        ),
    ] {
        let r = refresh(&emu, &central, token, &extra).await;
        assert_eq!(r.status, 400, "{why}: {r:?}");
        r.err(400, "invalid_client");
    }
    let s = emu.ctl_at(&at, Method::GET, "stats", None).await.body;
    assert_eq!(
        (&s["refreshes"], &s["refreshes_refused"]),
        (&json!(0), &json!(4))
    );
    // Refused exchanges did not spend the token; the right secret does.
    let r = refresh(&emu, &central, token, &credentials(SECRET)).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The secret stays registered for the next pair, and through a reinstall without one.
    let next_token = r.body["refresh_token"].as_str().unwrap().to_string();
    refresh(&emu, &central, &next_token, &credentials("wrong"))
        .await
        .err(400, "invalid_client");
    let form = install(&emu, &at, &url, json!({}), &mut rx).await;
    refresh(&emu, &central, &form["auth[refresh_token]"], "")
        .await
        .err(400, "invalid_client");
    // Installing with another secret replaces it.
    let form = install(&emu, &at, &url, json!({ "client_secret": "new" }), &mut rx).await;
    refresh(
        &emu,
        &central,
        &form["auth[refresh_token]"],
        &credentials(SECRET),
    )
    .await
    .err(400, "invalid_client");
    assert_eq!(
        refresh(
            &emu,
            &central,
            &form["auth[refresh_token]"],
            &credentials("new")
        )
        .await
        .status,
        200
    );

    // An app without a registered secret: any secret, or none, is accepted (tests of old).
    let t = emu.token_with(json!({ "client_id": "open.app" })).await;
    let r = refresh(
        &emu,
        &central,
        &t.refresh,
        "&client_id=open.app&client_secret=whatever",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // POST /_emulator/token registers one too.
    let t = emu
        .token_with(json!({ "client_id": "closed.app", "client_secret": "x" }))
        .await;
    refresh(&emu, &central, &t.refresh, "&client_id=closed.app")
        .await
        .err(400, "invalid_client");
    let r = refresh(
        &emu,
        &central,
        &t.refresh,
        "&client_id=closed.app&client_secret=x",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    // A secret that is not a non-empty string is refused, and nothing is installed.
    for bad in [json!(""), json!(5), json!(["s"])] {
        let r = emu
            .ctl_at(
                &at,
                Method::POST,
                "install",
                Some(json!({ "client_id": "x.app", "handler": url, "client_secret": bad })),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        let r = emu
            .ctl_raw(Method::POST, "token", Some(json!({ "client_secret": bad })))
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_portal_names_and_serves_its_own_oauth_server() {
    let emu = Emu::start();
    let central = emu.base.clone();
    let made = portals(&emu, json!({ "count": 2, "config": { "oauth": "portal" } })).await;
    let (bx, other_box) = (origin(&made[0]), origin(&made[1]));
    assert_eq!(made[0]["server_endpoint"], json!(format!("{bx}/oauth/")));
    assert_eq!(made[0]["oauth"], json!("portal"));
    assert_eq!(made[0]["oauth_server"], json!(central));
    let c = emu.ctl_at(&bx, Method::GET, "config", None).await.body;
    assert_eq!(c["oauth"], json!("portal"));
    let (url, mut rx) = receiver().await;
    let form = install(&emu, &bx, &url, json!({ "client_secret": SECRET }), &mut rx).await;
    assert_eq!(form["auth[server_endpoint]"], format!("{bx}/oauth/"));
    // Its own server answers for it, naming itself.
    let r = refresh(
        &emu,
        &bx,
        &form["auth[refresh_token]"],
        &credentials(SECRET),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["member_id"], made[0]["member_id"]);
    assert_eq!(r.body["client_endpoint"], json!(format!("{bx}/rest/")));
    assert_eq!(r.body["server_endpoint"], json!(format!("{bx}/oauth/")));
    assert_eq!(r.body["domain"], made[0]["domain"]);
    let r2 = r.body["refresh_token"].as_str().unwrap().to_string();
    // Another portal's token is not its own; a box server does not pass it on.
    refresh(&emu, &other_box, &r2, &credentials(SECRET))
        .await
        .err(400, "invalid_grant");
    let t = emu.token_with(json!({})).await;
    refresh(&emu, &bx, &t.refresh, "")
        .await
        .err(400, "invalid_grant");
    // The central server refreshes a box portal's tokens too (as oauth.bitrix.info does for
    // self-hosted portals), naming itself.
    let r = refresh(&emu, &central, &r2, &credentials(SECRET)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["member_id"], made[0]["member_id"]);
    assert_eq!(r.body["server_endpoint"], json!(format!("{central}/rest/")));

    // The first portal as a box: its events name its own /oauth/, where it answers for its own
    // grants as itself and for every other portal's as the central server.
    let c = emu.config(json!({ "oauth": "portal" })).await;
    assert_eq!(c["oauth"], json!("portal"));
    let form = install(&emu, &central, &url, json!({}), &mut rx).await;
    assert_eq!(form["auth[server_endpoint]"], format!("{central}/oauth/"));
    let r = refresh(&emu, &central, &form["auth[refresh_token]"], "").await;
    assert_eq!(
        r.body["server_endpoint"],
        json!(format!("{central}/oauth/"))
    );
    // Back to the cloud.
    let cloud = emu
        .ctl_at(
            &bx,
            Method::POST,
            "config",
            Some(json!({ "oauth": "cloud" })),
        )
        .await;
    assert_eq!(cloud.body["oauth"], json!("cloud"));
    let form = install(&emu, &bx, &url, json!({}), &mut rx).await;
    assert_eq!(form["auth[server_endpoint]"], format!("{central}/rest/"));

    // Unknown modes are refused whole.
    for bad in [json!("box"), json!(1), json!(null), json!("CLOUD")] {
        let r = emu
            .ctl_raw(Method::POST, "config", Some(json!({ "oauth": bad })))
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.body["error"], json!("BAD_CONFIG"));
    }
    assert_eq!(emu.get("config").await["oauth"], json!("portal"));
}
