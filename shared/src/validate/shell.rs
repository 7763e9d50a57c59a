//! Templates in shell scripts: where each `{{ … }}` stands and what quoting
//! surrounds it, so that a value is never reparsed as script text.

use super::Checker;
use crate::document::DocPath;
use crate::shell_script::{Quoting, QuotingMap};

/// One `{{ … }}` of a shell script, as found by [`shell_template_sites`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellSite {
    /// The expression between the braces, trimmed.
    pub expr: String,
    /// The 1-based line of the script it is on.
    pub line: usize,
    /// The quoting around it, with `{% %}` tags left out.
    pub quoting: Quoting,
    /// The script text of its line before it.
    pub before: String,
}

/// The `{{ … }}` of a shell script with the quoting each stands in: the script
/// is lexed with every expression replaced by a word and every `{% %}` and
/// `{# #}` tag removed (logic can still move text around; the render checks again).
pub fn shell_template_sites(source: &str) -> Vec<ShellSite> {
    let mut text = String::with_capacity(source.len());
    let mut found = Vec::new();
    let mut rest = source;
    let mut consumed = 0;
    while let Some(open) = rest.find('{') {
        let kind = rest[open + 1..].chars().next();
        let close = match kind {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => "#}",
            _ => {
                text.push_str(&rest[..=open]);
                consumed += open + 1;
                rest = &rest[open + 1..];
                continue;
            }
        };
        let inner_at = open + 2;
        let Some(len) = tag_end(&rest[inner_at..], close) else {
            break;
        };
        text.push_str(&rest[..open]);
        if kind == Some('{') {
            let expr = rest[inner_at..inner_at + len]
                .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
            let upto = &source[..consumed + open];
            let line = upto.matches('\n').count() + 1;
            let before = upto.rsplit('\n').next().unwrap_or_default().to_owned();
            found.push((text.len(), expr.to_owned(), line, before));
            // Any word will do: only the position is looked up.
            text.push('v');
        }
        let end = inner_at + len + close.len();
        consumed += end;
        rest = &rest[end..];
    }
    text.push_str(rest);
    let map = QuotingMap::new(&text);
    found
        .into_iter()
        .map(|(pos, expr, line, before)| ShellSite {
            expr,
            line,
            quoting: map.at(pos),
            before,
        })
        .collect()
}

/// Length of a tag's inside up to `close`, skipping string literals.
fn tag_end(s: &str, close: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if s[i..].starts_with(close) => return Some(i),
            None => {}
        }
    }
    None
}

/// Whether an expression applies the filter `name`.
fn uses_filter(expr: &str, name: &str) -> bool {
    expr.split('|').skip(1).any(|filter| {
        filter
            .trim_start()
            .split(|c: char| c == '(' || c.is_whitespace())
            .next()
            == Some(name)
    })
}

/// The command that parses the value's text as a script again, if the simple
/// command around it plainly is one: `eval` and `ssh` (which joins its
/// arguments into a remote command) for any value, `sh -c "…"`, `su -c "…"` and
/// the like for a double-quoted one. A heuristic for a warning: it reads the
/// words of the line before the value, not the shell's grammar.
fn reparsed_by(before: &str, quoting: Quoting) -> Option<&'static str> {
    let command = before
        .rsplit([';', '&', '|', '(', '`'])
        .next()
        .unwrap_or(before);
    let mut words = command.split_whitespace().skip_while(|w| {
        w.contains('=') || ["sudo", "exec", "command", "then", "do", "else"].contains(w)
    });
    let first = words.next()?;
    match first.rsplit('/').next().unwrap_or(first) {
        "eval" => Some("eval"),
        "ssh" => Some("ssh"),
        "sh" | "bash" | "dash" | "ksh" | "zsh"
            if quoting == Quoting::Double && words.any(|w| w == "-c") =>
        {
            Some("sh -c")
        }
        "su" if quoting == Quoting::Double && words.any(|w| w == "-c") => Some("su -c"),
        _ => None,
    }
}

/// Templates in `run` the shell cannot expand are errors; `| safe` is a warning.
pub(super) fn check_shell_values(c: &mut Checker<'_>, path: &DocPath, source: &str) {
    if !source.contains("{{") {
        return;
    }
    for site in shell_template_sites(source) {
        let shown = format!("{{{{ {} }}}}", site.expr);
        let line = site.line;
        if uses_filter(&site.expr, "safe") {
            c.warn(
                path,
                false,
                format!("`{shown}` is written into the script as code (line {line} of the script)"),
                Some(
                    "drop `| safe` unless the value is script text you control; without it any value arrives intact"
                        .into(),
                ),
            );
            continue;
        }
        let q = site.quoting;
        if q.reference("V").is_some() {
            if q != Quoting::Comment
                && !uses_filter(&site.expr, "quote")
                && let Some(cmd) = reparsed_by(&site.before, q)
            {
                c.warn(
                    path,
                    false,
                    format!("`{shown}` goes into text that `{cmd}` parses as a script again, where the value becomes code (line {line} of the script)"),
                    Some(if cmd == "sh -c" {
                        format!(
                            "pass it as an argument (sh -c '… \"$1\"' sh {shown}) or quote it for that shell: {{{{ {} | quote }}}}",
                            site.expr
                        )
                    } else {
                        format!("quote it for that shell: {{{{ {} | quote }}}}", site.expr)
                    }),
                );
            }
            continue;
        }
        let hint = match q {
            Quoting::Single => format!(
                "move it outside the single quotes, e.g. 'text '\"{shown}\"' more', or use double quotes: \"text {shown} more\""
            ),
            Quoting::AnsiC => format!("move it outside the $'…' quotes, e.g. $'a\\tb'\"{shown}\""),
            Quoting::QuotedHeredoc => "unquote the delimiter (<<EOF instead of <<'EOF'): the value still arrives intact; write other $ and ` in the body as \\$ and \\`".into(),
            Quoting::HeredocDelimiter => "use a fixed delimiter such as EOF".into(),
            Quoting::Escaped => "remove the backslash: the value arrives intact without it".into(),
            Quoting::Arithmetic => format!(
                "assign it first and check it is a number: n={shown}; case $n in ''|*[!0-9]*) exit 2;; esac; echo $((n + 1))"
            ),
            Quoting::Bare | Quoting::Double | Quoting::Heredoc | Quoting::Comment => String::new(),
        };
        c.error(
            path,
            false,
            format!("`{shown}` is {} (line {line} of the script)", q.describe()),
            Some(hint),
        );
    }
}
