//! The wasm-bindgen surface: classes, conversions, errors and TypeScript types. Thin: decisions
//! live in `core`; this layer reads JavaScript values, calls the core and writes results back.

pub mod calls;
pub mod client;
pub mod convert;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod flow;
pub mod frame;
pub mod platform;
pub mod queue;
pub mod signal;
pub mod store;
pub mod types;

pub use client::Bitrix24;
pub use flow::Reservation;
pub use queue::OfflineQueue;
