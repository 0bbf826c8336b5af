//! What reaches a placement frame: `window.name`, the portal's `CALLBACK:JSON` answers and the
//! init data in them, the portals allow-list. Nothing may panic.
#![no_main]

use b24_offline::core::frame::{init_data, parse_window_name, same_portal, split_answer};
use b24_offline::core::origin::host_allowed;
use b24_offline::core::platform::Platform;
use b24_offline::core::testkit::Fake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for allow_http in [false, true] {
        if let Ok(frame) = parse_window_name(&text, allow_http) {
            let _ = same_portal(&frame.origin, &text);
            let _ = host_allowed(&frame.origin.host, &[text.to_string(), "*.bitrix24.com".into()]);
        }
    }
    if let Some(Ok((_, json))) = split_answer(&text) {
        let fake = Fake::new(|_, _, _| unreachable!());
        if let Some(v) = fake.parse(json) {
            let _ = init_data(&fake, &v);
        }
    }
});
