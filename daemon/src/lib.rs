//! sluiced as a library: the binary is a thin `main` over this, and tests start
//! the same pieces in-process.

pub mod nodes;
pub mod secrets;
pub mod store;
