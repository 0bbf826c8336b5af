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

/// The global allocator of the wasm build (size classes instead of dlmalloc or talc).
#[cfg(any(target_arch = "wasm32", test))]
mod heap;
