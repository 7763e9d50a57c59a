//! Cron expressions and time zones: parse any text (with and without a
//! seconds field), and for what parses, next fire times must be strictly
//! increasing and after the start.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_shared::cron::Schedule;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "expression|zone|start seconds"
    let mut parts = text.splitn(3, '|');
    let expr = parts.next().unwrap_or_default();
    let zone = parts.next();
    let start = parts
        .next()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let _ = sluice_shared::cron::parse_expression(expr, true);
    if let Some(z) = zone {
        let _ = sluice_shared::cron::parse_timezone(z);
    }
    for seconds in [false, true] {
        if let Ok(schedule) = Schedule::new(expr, zone, seconds) {
            let mut last = start;
            for fire in schedule.upcoming(start, 4) {
                let t = fire.timestamp();
                assert!(t > last, "{expr:?}: fire {t} not after {last}");
                last = t;
            }
        }
    }
});
