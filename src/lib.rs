//! b24-offline: Bitrix24 offline events, reserved, processed and acknowledged safely.
//!
//! The layering follows `API.md`: a pure core, one I/O transport, token sources and a thin
//! wasm-bindgen surface (they arrive with the client, issue 3). The portal emulator that every
//! test runs against lives in `tests/emulator`.
