//! Writing command output. A closed pipe (`sluice validate dir | head`) ends
//! output quietly instead of panicking as `println!` would.

use std::io::Write;

/// Writes `text` to stdout; a closed pipe is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
