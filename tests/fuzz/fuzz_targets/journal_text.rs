//! What a journal store hands back (an app's own store may hold anything): a journal entry or
//! index, read or refused as STORE_FAILED, and what is read writes back as itself.
#![no_main]

use b24_offline::core::journal::{Entry, Index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(e) = Entry::from_text("pid", &text) {
        assert_eq!(Entry::from_text("pid", &e.to_text()).as_ref(), Ok(&e));
    }
    if let Ok(i) = Index::from_text(&text) {
        assert_eq!(Index::from_text(&i.to_text()).as_ref(), Ok(&i));
    }
});
