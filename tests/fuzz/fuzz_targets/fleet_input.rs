//! What reaches the fleet from outside: install and uninstall requests (form text or JSON)
//! read or refused, never panicking, and a portal record from the store read or refused as
//! STORE_FAILED, what is read writing back as itself.
#![no_main]

use b24_offline::core::fleet::install::{Install, Trust, Uninstall};
use b24_offline::core::fleet::record::Record;
use b24_offline::core::read::tree;
use b24_offline::core::signal::form_tree;
use b24_offline::core::testkit::Fake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let trust = Trust {
        allow_http: true,
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
    }
    if let Ok(r) = Record::from_text(&text) {
        assert_eq!(Record::from_text(&r.to_text()).as_ref(), Ok(&r));
    }
});
