//! Whatever a portal (or the proxy in front of it) answers: the envelope with its HTTP status,
//! and the rows inside a reservation or a list page, their timestamps included. Nothing may
//! panic; a body that is not an envelope is `BAD_RESPONSE`.
#![no_main]

use b24_offline::core::envelope::decode;
use b24_offline::core::model::{Binding, OfflineEvent, Taken};
use b24_offline::core::platform::Platform;
use b24_offline::core::testkit::Fake;
use b24_offline::core::time::parse_iso_ms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&status, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let fake = Fake::new(|_, _, _| unreachable!());
    let status = 100 + status as u16 * 2;
    match decode(&fake, status, &text) {
        Ok(reply) => {
            if let Some(result) = reply.result {
                if let Some(taken) = Taken::read::<Fake>(&result) {
                    for e in &taken.events {
                        let _ = parse_iso_ms(&e.timestamp);
                    }
                }
                let _ = OfflineEvent::read_all::<Fake>(&result);
                let _ = Binding::read::<Fake>(&result);
                if let Some(items) = Fake::items(&result) {
                    for i in &items {
                        let _ = OfflineEvent::read::<Fake>(i);
                    }
                }
            }
        }
        Err(e) => assert!(!e.code.is_empty()),
    }
});
