//! sluiced as a library: the binary is a thin `main` over this, and tests start
//! the same pieces in-process.

/// The allocator of the daemon and everything built on this library (its
/// benchmarks and tests). glibc's malloc spent a tenth of the webhook intake's
/// CPU in its arenas and locks when allocations are freed on other threads
/// (a request's data ends in the store writer); mimalloc's thread-local
/// heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod attempt_log;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fdlimit;
pub mod http_client;
pub mod limits;
pub mod llm;
pub mod logging;
pub mod metrics;
pub mod nodes;
pub mod notify;
pub mod procstat;
pub mod prometheus;
pub mod registry;
pub mod retention;
pub mod secrets;
pub mod statedir;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod triggers;
pub mod watchdog;
pub mod watcher;

pub use daemon::{Daemon, Handle, Overrides, ReloadOutcome, Settings, StartError};
