//! The sluice console as a library, so that snapshot tests and benchmarks
//! can drive its state, update and views without a terminal.

pub mod console;
pub mod escape;
