//! The pure core: everything that can be decided without a browser. No web-sys, js-sys or gloo
//! here; I/O, time and JSON come in through [`platform::Platform`]. Tested natively.

pub mod args;
pub mod auth;
pub mod batch;
pub mod client;
pub mod consume;
pub mod digits;
pub mod envelope;
pub mod error;
pub mod fleet;
pub mod frame;
pub mod joint;
pub mod journal;
pub mod limiter;
pub mod model;
pub mod objects;
pub mod offline;
pub mod options;
pub mod origin;
pub mod out;
pub mod pages;
pub mod platform;
pub mod read;
pub mod retry;
pub mod signal;
pub mod text;
pub mod time;
pub mod validate;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod consume_tests;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod hostile_tests;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod objects_tests;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod testworld;
