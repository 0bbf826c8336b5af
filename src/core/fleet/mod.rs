//! The fleet: one worker (or many) draining every portal the app is installed on, with the
//! reservation flow of `core::consume` per portal. What is decided here: which installs to
//! believe, what is kept per portal and how, how a refresh token (good for one exchange) is
//! renewed exactly once across workers, which worker drains which portal, and in which order
//! portals get their turn. `docs/fleet.md` explains the whole.

pub mod install;
pub mod oauth;
pub mod record;
pub mod settings;
pub mod store;
pub mod worker;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
