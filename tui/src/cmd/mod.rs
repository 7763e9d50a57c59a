//! One module per subcommand.

pub mod cron;
pub mod remote;
pub mod validate;
