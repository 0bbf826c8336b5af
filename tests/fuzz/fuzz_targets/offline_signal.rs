//! The body of an onOfflineEvent POST, as form text or JSON: verified against the app's
//! token, never panicking, never accepted without the token.
#![no_main]

use b24_offline::core::read::tree;
use b24_offline::core::signal::{form_tree, verify};
use b24_offline::core::testkit::Fake;
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let form = form_tree(&text);
    if verify(&form, TOKEN).is_ok() {
        assert!(text.contains("application_token"));
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        let t = tree::<Fake>(&v);
        if verify(&t, TOKEN).is_ok() {
            assert!(text.contains(TOKEN));
        }
    }
});
