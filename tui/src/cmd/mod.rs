//! One module per subcommand.

pub mod cron;
pub mod demo;
pub mod limits;
pub mod logs;
pub mod remote;
pub mod validate;
