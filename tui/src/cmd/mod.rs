//! One module per subcommand.

pub mod cron;
pub mod validate;
