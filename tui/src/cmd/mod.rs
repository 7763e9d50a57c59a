//! One module per subcommand.

pub mod cron;
pub mod demo;
pub mod remote;
pub mod validate;
