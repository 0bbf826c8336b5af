//! Any request the emulator can receive: a form or query string with PHP-style keys, or a JSON
//! body, for any REST method (with a valid application token or none), and any control call.
//! No panic may be reachable from either.
#![no_main]

use b24_emulator::control;
use b24_emulator::params::{parse_form, Params};
use b24_emulator::rest::{execute, Incoming};
use b24_emulator::state::{Shared, Token};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const METHODS: &[&str] = &[
    "event.offline.get", "event.offline.list", "event.offline.clear", "event.offline.error",
    "event.bind", "event.unbind", "event.get", "events", "feature.get", "batch", "app.info",
    "profile", "crm.deal.add", "crm.deal.update", "crm.deal.get", "crm.deal.list",
    "crm.deal.delete", "crm.lead.add", "crm.contact.list",
];
const CONTROL: &[&str] = &["config", "token", "webhook", "expire", "trigger", "clock", "faults", "cleanup"];

fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let shared = Arc::new(Shared::new("fuzz.bitrix24.com".into(), true));
        {
            let mut st = shared.lock();
            let app = st.app("local.app");
            st.tokens.insert(
                "fuzz-token".into(),
                Token { app, user_id: 1, admin: true, expires_ms: i64::MAX },
            );
        }
        shared
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let shared = shared();
    if pick >= 240 {
        let endpoint = CONTROL[pick as usize % CONTROL.len()];
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(rest) {
            let _ = control::handle(shared, "POST", endpoint, &body);
            // A fuzzed config or fault rule must not leave the emulator unusable for the rest.
            let _ = control::handle(shared, "POST", "reset", &serde_json::json!({}));
            let _ = control::handle(shared, "DELETE", "faults", &serde_json::json!({}));
        }
        return;
    }
    let method = METHODS[pick as usize % METHODS.len()];
    let mut params = if pick % 2 == 0 {
        parse_form(rest)
    } else {
        match serde_json::from_slice::<serde_json::Value>(rest) {
            Ok(v) => Params::from_value(v),
            Err(_) => return,
        }
    };
    if pick % 3 != 0 {
        params.0.insert("auth".into(), serde_json::json!("fuzz-token"));
    }
    let mut st = shared.lock();
    let _ = execute(
        shared,
        &mut st,
        Incoming { method, webhook: None, params, https: true },
    );
});
