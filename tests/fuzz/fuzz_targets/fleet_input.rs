//! What reaches the fleet from outside: install and uninstall requests (form text or JSON)
//! read or refused, never panicking; an OAuth server's answer read or refused, what is read
//! bounded; and a portal record from the store read or refused as STORE_FAILED, what is read
//! writing back as itself.
#![no_main]

use b24_offline::core::fleet::install::{Install, Trust, Uninstall};
use b24_offline::core::fleet::oauth::read_grant;
use b24_offline::core::fleet::record::Record;
use b24_offline::core::read::tree;
use b24_offline::core::signal::form_tree;
use b24_offline::core::testkit::Fake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Both trust paths: a configured OAuth server (the cloud's, the emulator's), and a portal
    // opted in as its own (box editions).
    let trust = Trust {
        allow_http: true,
        oauth_servers: vec!["oauth.bitrix.info".into(), "127.0.0.1:8000".into()],
        portal_oauth: vec!["127.0.0.1:8024".into()],
        ..Trust::default()
    };
    let form = form_tree(&text);
    if let Ok(i) = Install::read(&form, &trust) {
        // Whatever was believed names the portal as its REST endpoint does.
        assert_eq!(i.member_id.len(), 32);
        assert!(!i.access_token.is_empty() && !i.refresh_token.is_empty());
    }
    let _ = Uninstall::read(&form);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        let t = tree::<Fake>(&v);
        let _ = Install::read(&t, &trust);
        let _ = Uninstall::read(&t);
        for status in [200, 400, 500] {
            if let Ok(g) = read_grant(status, Some(&t), true) {
                assert_eq!(status, 200);
                for token in [&g.access, &g.refresh] {
                    assert!(!token.is_empty() && token.len() <= 512);
                    assert!(token.bytes().all(|b| b.is_ascii_graphic()));
                }
                assert!(g.expires_in_s >= 1.0 && g.expires_in_s <= 30.0 * 86_400.0);
                assert!(g.member_id.as_ref().is_none_or(|m| m.len() == 32));
            }
        }
    }
    if let Ok(r) = Record::from_text(&text) {
        assert_eq!(Record::from_text(&r.to_text()).as_ref(), Ok(&r));
    }
});
