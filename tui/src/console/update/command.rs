//! The `:` command line.

use sluice_shared::run::RunId;

use super::flash;
use super::sync::{open_run, set_filter, switch_view};
use crate::console::app::{App, Overlay, View};
use crate::console::msg::Effect;

pub(super) fn command(app: &mut App, text: &str) -> Vec<Effect> {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "runs" | "r" => switch_view(app, View::Runs),
        "pipelines" | "p" => switch_view(app, View::Pipelines),
        "approvals" | "a" => switch_view(app, View::Approvals),
        "metrics" | "m" => switch_view(app, View::Metrics),
        "audit" => switch_view(app, View::Audit),
        "help" | "h" => {
            app.flash = None;
            app.overlay = Some(Overlay::Help(0));
            Vec::new()
        }
        "q" | "quit" => {
            app.quit = true;
            vec![Effect::Quit]
        }
        "run" | "open" => match rest.parse::<RunId>() {
            Ok(id) => open_run(app, id),
            Err(_) => {
                flash(app, format!(":{word} needs a run id, e.g. :run 12"), true);
                Vec::new()
            }
        },
        "filter" => {
            app.back.clear();
            app.view = View::Runs;
            set_filter(app, rest.trim().to_string())
        }
        "" => Vec::new(),
        other => {
            flash(
                app,
                format!(
                    "unknown command :{other} (runs, pipelines, approvals, metrics, audit, run N, filter ..., help, quit)"
                ),
                true,
            );
            Vec::new()
        }
    }
}
