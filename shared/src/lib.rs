//! Shared core of sluice: the pipeline model and its parsing, validation,
//! templating and cron helpers, the socket protocol's types, its method
//! table and its client. The daemon and the console both build on this
//! crate and never define their own copies of these types.

pub mod client;
pub mod cron;
pub mod diagnostic;
pub mod document;
pub mod duration;
pub mod event;
pub mod graph;
pub mod inputs;
pub mod loader;
pub mod method;
pub mod model;
pub mod paths;
pub mod protocol;
pub mod run;
pub mod schema;
pub mod shell_script;
pub mod suggest;
pub mod template;
pub mod time;
pub mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use document::{DocPath, Format, Pos};
pub use duration::Duration;
pub use loader::{LoadedFile, PipelineSet, load_paths, load_source};
pub use model::{Node, NodeKind, Pipeline, Trigger};
