//! b24-emulator: a local Bitrix24 portal for everything offline events touch.
//!
//! It follows `docs/queue-rules.md` rule by rule (merging, reservation, clear/error, expiry,
//! limits, auth) so that an application, and this project's library, can be tested against the
//! portal's real behaviour without a portal. The binary is the product; the library target
//! exists so benchmarks and tests can reach the same code.
//!
//! The portal's logic is one request-in, step-out machine (`engine`) with no server under it;
//! feature `server` (default) adds the native HTTP(S) shell the binary runs, feature `wasm`
//! the binding the npm package's Node shell drives (`pkg-template/emulator/`).

pub mod batch;
pub mod clock;
pub mod control;
pub mod crm;
pub mod engine;
pub mod error;
pub mod events;
pub mod faults;
pub mod filter;
pub mod limits;
pub mod notify;
pub mod oauth;
pub mod params;
pub mod portal;
pub mod portals;
pub mod queue;
pub mod rest;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub mod wasm;
