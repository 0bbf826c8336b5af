//! b24-offline: Bitrix24 offline events, reserved, processed and acknowledged safely.
//!
//! The layering (`docs/architecture.md`): a pure core (`core`, tested natively), one I/O
//! transport (`transport`), token sources (`auth`), the frame channel (`frame`) and a thin
//! wasm-bindgen surface (`js`). The portal emulator every test runs against lives in
//! `tests/emulator`.

pub mod core;

#[cfg(target_arch = "wasm32")]
pub mod auth;
#[cfg(target_arch = "wasm32")]
pub mod frame;
#[cfg(target_arch = "wasm32")]
pub mod js;
#[cfg(target_arch = "wasm32")]
pub mod transport;

/// The global allocator of the browsers' wasm (size classes instead of dlmalloc or talc). The
/// Node build (feature `fleet`) keeps std's dlmalloc: a long-lived server must reuse memory
/// across sizes (a large answer's blocks for small ones), which the size classes never do.
#[cfg(any(
    all(target_arch = "wasm32", not(feature = "fleet")),
    all(test, not(target_arch = "wasm32"))
))]
mod heap;
