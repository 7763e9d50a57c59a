//! Console render and latency figures (prints them; `cargo bench -p sluice-tui --bench console`):
//! - render time per frame of the runs table over 100,000 runs,
//! - render time per frame of a log view over 1,000,000 lines,
//! - input-to-screen latency while 1,000 events per second arrive.
//!
//! Target: under 5 ms per frame.

use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::json;
use sluice_shared::method::notice;
use sluice_shared::protocol::Notification;
use sluice_shared::run::RunId;
use sluice_tui::console::app::{App, DetailFocus, Options};
use sluice_tui::console::keymap::Keymap;
use sluice_tui::console::msg::{ConnEvent, Msg, Tag};
use sluice_tui::console::update::update;
use sluice_tui::console::views::draw;

const NOW: i64 = 1_795_306_200_000;

fn connected(log_cap: usize) -> App {
    let opts = Options {
        daemon: "/run/sluice/sluice.sock".into(),
        log_cap,
        ..Options::default()
    };
    let mut app = App::new(opts, Keymap::defaults(), NOW);
    update(
        &mut app,
        Msg::Conn(ConnEvent::Connected(
            serde_json::from_value(
                json!({"protocol":"1.0","daemon_version":"0.1.0","user":"bench","role":"admin"}),
            )
            .unwrap(),
        )),
    );
    update(&mut app, Msg::Conn(ConnEvent::Synced));
    app
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let n = times.len();
    let mean = times.iter().sum::<Duration>() / n as u32;
    let p = |q: f64| times[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "{name:<52} n={n:<5} mean {:>7.3} ms  p50 {:>7.3} ms  p95 {:>7.3} ms  max {:>7.3} ms",
        mean.as_secs_f64() * 1e3,
        p(0.5).as_secs_f64() * 1e3,
        p(0.95).as_secs_f64() * 1e3,
        times[n - 1].as_secs_f64() * 1e3
    );
}

fn frames(
    app: &mut App,
    w: u16,
    h: u16,
    n: usize,
    step: impl Fn(&mut App, usize),
) -> Vec<Duration> {
    update(app, Msg::Resize(w, h));
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        step(app, i);
        let t = Instant::now();
        terminal.draw(|f| draw(f, app)).unwrap();
        times.push(t.elapsed());
    }
    times
}

fn runs_table() {
    let mut app = connected(20_000);
    let runs: Vec<_> = (1..=100_000i64)
        .rev()
        .map(|id| {
            let state = [
                "succeeded",
                "failed",
                "running",
                "waiting",
                "queued",
                "cancelled",
            ][(id % 6) as usize];
            json!({"id": id, "pipeline": format!("pipeline-{}", id % 37), "version": 1,
                "state": state,
                "trigger": {"kind": "cron"}, "user": "ops", "created_at": NOW - id * 1000,
                "started_at": NOW - id * 1000 + 5, "finished_at": NOW - id * 1000 + 900})
        })
        .collect();
    let page = json!({ "runs": runs });
    update(
        &mut app,
        Msg::Reply(
            Tag::Runs {
                append: false,
                generation: 0,
            },
            Ok(page.clone()),
        ),
    );
    assert_eq!(app.runs.rows.len(), 100_000);
    for (w, h) in [(80, 24), (120, 40)] {
        let times = frames(&mut app, w, h, 300, |app, i| {
            // Walk through the whole history: pages down, then to the end and back.
            let k = match i % 100 {
                0 => KeyCode::End,
                50 => KeyCode::Home,
                _ => KeyCode::PageDown,
            };
            update(app, key(k));
        });
        report(&format!("runs table, 100,000 runs, {w}x{h}"), times);
    }
    let times = frames(&mut app, 120, 40, 100, |app, i| {
        if i == 0 {
            update(app, key(KeyCode::Char('/')));
            for c in "pipeline-3".chars() {
                update(app, key(KeyCode::Char(c)));
            }
            update(app, key(KeyCode::Enter));
            // The daemon would filter by pipeline; send all 100,000 back so the
            // local text filter has the whole history to scan.
            let generation = app.runs.generation;
            update(
                app,
                Msg::Reply(
                    Tag::Runs {
                        append: false,
                        generation,
                    },
                    Ok(page.clone()),
                ),
            );
            assert!(app.visible_count() > 1000);
        }
        update(app, key(KeyCode::Down));
    });
    report("runs table, 100,000 runs, text filter, 120x40", times);
}

fn log_lines(app: &mut App, n: u32) {
    let lines: Vec<_> = (1..=n)
        .map(|seq| {
            json!({"run": 1, "node": "work", "attempt": 1, "seq": seq, "at_ms": NOW + seq as i64,
                "stream": if seq % 10 == 0 { "stderr" } else { "stdout" },
                "line": format!("line {seq}: the quick brown fox jumps over the lazy dog and keeps running past the edge of the screen {seq}")})
        })
        .collect();
    for chunk in lines.chunks(10_000) {
        let generation = app.detail.as_ref().unwrap().log_generation;
        update(
            app,
            Msg::Reply(
                Tag::Logs {
                    run: RunId(1),
                    node: "work".into(),
                    generation,
                },
                Ok(json!({ "lines": chunk, "next": 0, "finished": false })),
            ),
        );
    }
}

fn open_run(app: &mut App) {
    update(app, key(KeyCode::Char(':')));
    for c in "run 1".chars() {
        update(app, key(KeyCode::Char(c)));
    }
    update(app, key(KeyCode::Enter));
    update(
        app,
        Msg::Reply(
            Tag::Detail(RunId(1)),
            Ok(
                json!({"id": 1, "pipeline": "big-log", "state": "running", "trigger": {"kind": "manual"},
                "created_at": NOW, "started_at": NOW, "inputs": {},
                "nodes": [{"id": "work", "kind": "shell", "state": "running",
                    "attempts": [{"attempt": 1, "state": "running", "started_at": NOW}], "started_at": NOW}]}),
            ),
        ),
    );
}

fn log_view() {
    for (cap, label) in [
        (20_000usize, "default cap: newest 20,000 kept"),
        (1_000_000, "all kept"),
    ] {
        let mut app = connected(cap);
        open_run(&mut app);
        let t = Instant::now();
        log_lines(&mut app, 1_000_000);
        let load = t.elapsed();
        let d = app.detail.as_ref().unwrap();
        println!(
            "log: 1,000,000 lines loaded in {:.0} ms, {} held, {} dropped ({label})",
            load.as_secs_f64() * 1e3,
            d.log.len(),
            d.log.dropped()
        );
        app.detail.as_mut().unwrap().focus = DetailFocus::Log;
        for (w, h) in [(80, 24), (120, 40)] {
            let times = frames(&mut app, w, h, 300, |app, i| {
                let k = match i % 60 {
                    0 => KeyCode::Char('g'),
                    30 => KeyCode::Char('G'),
                    _ => KeyCode::PageDown,
                };
                update(app, key(k));
            });
            report(
                &format!("log view, 1,000,000 lines ({label}), {w}x{h}"),
                times,
            );
        }
        let times = frames(&mut app, 120, 40, 50, |app, i| {
            if i == 0 {
                update(app, key(KeyCode::Char('/')));
                for c in "line 99999:".chars() {
                    update(app, key(KeyCode::Char(c)));
                }
                update(app, key(KeyCode::Enter));
            } else {
                update(app, key(KeyCode::Char('n')));
            }
        });
        report(&format!("log view, search + n, {label}, 120x40"), times);
    }
}

/// The run loop's shape (coalesce what is queued, update, draw once) with a
/// producer sending 1,000 events per second and a key every 50 ms.
fn latency() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut app = connected(20_000);
        open_run(&mut app);
        log_lines(&mut app, 1_000);
        update(&mut app, Msg::Resize(120, 40));
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Msg)>();
        let producer = tokio::spawn({
            let tx = tx.clone();
            async move {
                let mut seq = 1_000u32;
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for _ in 0..500 {
                    tick.tick().await;
                    for _ in 0..10 {
                        seq += 1;
                        let params = json!({"subscription": 1, "seq": seq as u64,
                            "event": {"type": "log", "run": 1, "node": "work", "attempt": 1, "seq": seq,
                                "stream": "stdout", "line": format!("event line {seq}")}});
                        let n = Notification { jsonrpc: "2.0".into(), method: notice::EVENT.into(), params };
                        let _ = tx.send((Instant::now(), Msg::Notice(n)));
                    }
                }
            }
        });
        let keys = tokio::spawn({
            let tx = tx.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                for i in 0..90 {
                    tick.tick().await;
                    let k = if i % 2 == 0 { KeyCode::Tab } else { KeyCode::Char('w') };
                    let _ = tx.send((Instant::now(), key(k)));
                }
            }
        });
        drop(tx);
        let mut latencies = Vec::new();
        let mut frames = 0u32;
        let started = Instant::now();
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            let mut keys_at = Vec::new();
            for (at, m) in batch {
                if matches!(m, Msg::Key(_)) {
                    keys_at.push(at);
                }
                update(&mut app, m);
            }
            terminal.draw(|f| draw(f, &app)).unwrap();
            frames += 1;
            let done = Instant::now();
            latencies.extend(keys_at.into_iter().map(|at| done - at));
        }
        let _ = producer.await;
        let _ = keys.await;
        println!(
            "latency run: {} log events over {:.1} s, {frames} frames drawn",
            500 * 10,
            started.elapsed().as_secs_f64()
        );
        report("input-to-screen latency at 1,000 events/s, 120x40", latencies);
    });
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    runs_table();
    log_view();
    latency();
}
