//! sluiced as a library: the binary is a thin `main` over this, and tests start
//! the same pieces in-process.

pub mod api;
pub mod audit;
pub mod config;
pub mod engine;
pub mod limits;
pub mod llm;
pub mod metrics;
pub mod nodes;
pub mod notify;
pub mod registry;
pub mod retention;
pub mod secrets;
pub mod statedir;
pub mod store;
pub mod triggers;
pub mod watcher;
