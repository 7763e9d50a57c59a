//! Writing command output. A closed pipe (`sluice validate dir | head`) ends
//! output quietly instead of panicking as `println!` would. On a terminal,
//! control characters in the text (which carries stored data: node output,
//! errors, names) are shown escaped rather than interpreted.

use std::io::{IsTerminal, Write};

/// Writes `text` to stdout; a closed pipe is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let text = if out.is_terminal() {
        sluice_tui::escape::controls(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes `sluice: error: <message>` to stderr; daemon errors can quote stored data.
pub fn error(message: &str) {
    let message = if std::io::stderr().is_terminal() {
        sluice_tui::escape::controls(message)
    } else {
        std::borrow::Cow::Borrowed(message)
    };
    eprintln!("sluice: error: {message}");
}
