//! A small lexer for POSIX shell scripts that tells the quoting context at each
//! position, so a template value can be referenced where the shell expands it
//! intact, and refused where it cannot (single quotes, quoted heredocs, ...).
//!
//! It knows quotes, backslashes, `$'…'`, comments, `$( )`, backticks, `${ }`,
//! arithmetic, heredocs (`<<`, `<<-`, quoted delimiters, several on one line)
//! and here-strings. It does not parse commands: it only follows quoting, which
//! is all that decides how a `${NAME}` placed there is read.

/// How the shell reads the text at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// An unquoted word: top level, inside `$( )` or backticks, or in `${ }` outside quotes.
    Bare,
    /// Inside double quotes: parameters expand, nothing else is parsed.
    Double,
    /// The body of an unquoted heredoc: parameters expand, quotes are literal.
    Heredoc,
    /// Inside single quotes: nothing expands.
    Single,
    /// Inside `$'…'`: only backslash escapes, nothing expands.
    AnsiC,
    /// The body of a quoted heredoc (`<<'EOF'`, `<<"EOF"`, `<<\EOF`): nothing expands.
    QuotedHeredoc,
    /// A heredoc's delimiter word, which is never expanded.
    HeredocDelimiter,
    /// Right after a backslash, which makes the shell take what follows literally.
    Escaped,
    /// Where bash evaluates the text as an expression: `$(( ))`, `(( ))`,
    /// `$[ ]`, `let`, array subscripts, `${s:offset:length}` and `[[ ]]` tests
    /// that compare numbers. Bash runs command substitutions found in an
    /// expression's array subscripts, so a value there is code.
    Arithmetic,
    /// A comment, which the shell ignores.
    Comment,
}

impl Quoting {
    /// How to reference variable `name` here so its value arrives intact,
    /// or `None` where no reference can (the value would be literal text or code).
    pub fn reference(self, name: &str) -> Option<String> {
        match self {
            // Quoted, so the value is one word: no splitting, no globbing.
            Self::Bare => Some(format!("\"${{{name}}}\"")),
            // Already inside quotes (or a heredoc): a quote here would be literal.
            Self::Double | Self::Heredoc | Self::Comment => Some(format!("${{{name}}}")),
            Self::Single
            | Self::AnsiC
            | Self::QuotedHeredoc
            | Self::HeredocDelimiter
            | Self::Escaped
            | Self::Arithmetic => None,
        }
    }

    /// Where this is, in words, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Bare => "in an unquoted word",
            Self::Double => "inside double quotes",
            Self::Heredoc => "in a heredoc",
            Self::Single => "inside single quotes, where the shell expands nothing",
            Self::AnsiC => "inside $'…' quotes, where the shell expands nothing",
            Self::QuotedHeredoc => {
                "in a heredoc with a quoted delimiter (<<'EOF'), where the shell expands nothing"
            }
            Self::HeredocDelimiter => "in a heredoc delimiter, which the shell never expands",
            Self::Escaped => "right after a backslash, which stops the shell expanding it",
            Self::Arithmetic => {
                "inside arithmetic ($(( )), (( )), $[ ], let, an array subscript, ${s:offset:length} or a [[ … -eq … ]] test), where the shell evaluates the value as an expression"
            }
            Self::Comment => "in a comment",
        }
    }
}

/// The quoting context of every byte of a script.
#[derive(Clone, Debug)]
pub struct QuotingMap {
    /// `(start, quoting)` in increasing `start`: each holds until the next.
    changes: Vec<(usize, Quoting)>,
}

impl QuotingMap {
    /// Lexes `script`. Never fails: unterminated constructs run to the end.
    pub fn new(script: &str) -> Self {
        let mut lexer = Lexer {
            s: script.as_bytes(),
            i: 0,
            stack: vec![Frame::command(End::Eof)],
            pending: Vec::new(),
            line_start: false,
            changes: Vec::new(),
        };
        lexer.run();
        Self {
            changes: lexer.changes,
        }
    }

    /// The quoting at byte offset `pos`.
    pub fn at(&self, pos: usize) -> Quoting {
        let k = self.changes.partition_point(|(start, _)| *start <= pos);
        k.checked_sub(1)
            .and_then(|k| self.changes.get(k))
            .map_or(Quoting::Bare, |(_, q)| *q)
    }
}

/// What ends a command-level frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Eof,
    /// `)` of `$(`.
    Paren,
    /// The closing backtick.
    Backtick,
}

#[derive(Clone, Debug)]
enum Frame {
    /// Command level: words, operators, nested constructs.
    Command {
        end: End,
        /// Open `(` (subshells, case patterns with both parens) inside this frame.
        parens: u32,
        /// Open `case … esac`: their `pattern)` must not close a `$(`.
        cases: u32,
        word_start: bool,
        /// The current word, when it is plain letters (for `case`/`esac`).
        word: Vec<u8>,
        /// The current word so far is a shell name, so a `[` opens a subscript.
        ident: bool,
        /// Inside the arguments of `let`, which are expressions.
        let_args: bool,
    },
    Double,
    /// `${ … }`: takes the quoting of what it is in.
    Brace {
        /// Still at the parameter's name, where `[` and `:` start arithmetic.
        at_name: bool,
        /// Nothing of the name read yet (`#` and `!` may prefix it).
        first: bool,
    },
    Arithmetic {
        /// Open `(`, or open `[` when `end` is a bracket.
        parens: u32,
        end: ArithEnd,
    },
    Heredoc(Pending),
}

/// What ends an arithmetic frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArithEnd {
    /// `))` of `$((` or `((`.
    Parens,
    /// `]` of `$[` or of an array subscript.
    Bracket,
    /// `}` of `${s:offset:length}`, left for the `${ }` frame to close.
    Brace,
    /// A byte offset: the `]]` of a `[[ ]]` test that compares numbers.
    At(usize),
}

impl Frame {
    fn command(end: End) -> Self {
        Self::Command {
            end,
            parens: 0,
            cases: 0,
            word_start: true,
            word: Vec::new(),
            ident: false,
            let_args: false,
        }
    }

    fn arithmetic(end: ArithEnd) -> Self {
        Self::Arithmetic { parens: 0, end }
    }
}

#[derive(Clone, Debug)]
struct Pending {
    delimiter: Vec<u8>,
    strip_tabs: bool,
    quoted: bool,
}

struct Lexer<'s> {
    s: &'s [u8],
    i: usize,
    stack: Vec<Frame>,
    /// Heredocs whose bodies start at the next newline, in order.
    pending: Vec<Pending>,
    /// At the start of a line of the heredoc on top of the stack.
    line_start: bool,
    changes: Vec<(usize, Quoting)>,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    fn mark(&mut self, pos: usize, q: Quoting) {
        if self.changes.last().is_some_and(|(_, last)| *last == q) {
            return;
        }
        if let Some(last) = self.changes.last_mut()
            && last.0 == pos
        {
            last.1 = q;
            return;
        }
        self.changes.push((pos, q));
    }

    /// The quoting of ordinary text in the current frame.
    fn current(&self) -> Quoting {
        let mut double = false;
        for frame in self.stack.iter().rev() {
            match frame {
                Frame::Arithmetic { .. } => return Quoting::Arithmetic,
                Frame::Double => double = true,
                Frame::Brace { .. } => {}
                Frame::Command { let_args: true, .. } => return Quoting::Arithmetic,
                Frame::Command { .. } => {
                    return if double {
                        Quoting::Double
                    } else {
                        Quoting::Bare
                    };
                }
                Frame::Heredoc(p) => {
                    return if p.quoted {
                        Quoting::QuotedHeredoc
                    } else if double {
                        Quoting::Double
                    } else {
                        Quoting::Heredoc
                    };
                }
            }
        }
        Quoting::Bare
    }

    /// The nearest frame that is not a `${ }`.
    fn base(&self) -> Option<&Frame> {
        self.stack
            .iter()
            .rev()
            .find(|f| !matches!(f, Frame::Brace { .. }))
    }

    fn run(&mut self) {
        while self.i < self.s.len() {
            if let Some(Frame::Arithmetic {
                end: ArithEnd::At(end),
                ..
            }) = self.stack.last()
                && self.i >= *end
            {
                self.stack.pop();
            }
            let here = self.current();
            self.mark(self.i, here);
            match self.stack.last() {
                Some(Frame::Command { .. }) => self.command_byte(),
                Some(Frame::Double) => self.double_byte(),
                Some(Frame::Brace { .. }) => self.brace_byte(),
                Some(Frame::Arithmetic { .. }) => self.arithmetic_byte(),
                Some(Frame::Heredoc(_)) => self.heredoc_byte(),
                None => self.stack.push(Frame::command(End::Eof)),
            }
        }
    }

    /// Skips a backslash and marks what it escapes.
    fn escape(&mut self) {
        if self.peek(1) == Some(b'\n') {
            self.i += 2;
            return;
        }
        self.mark(self.i + 1, Quoting::Escaped);
        self.i += 2;
    }

    /// `'…'`, starting at the opening quote.
    fn single_quoted(&mut self) {
        self.i += 1;
        self.mark(self.i, Quoting::Single);
        while self.i < self.s.len() && self.s[self.i] != b'\'' {
            self.i += 1;
        }
        self.i += 1;
    }

    /// `$'…'`, starting at the `$`.
    fn ansi_c(&mut self) {
        self.i += 2;
        self.mark(self.i, Quoting::AnsiC);
        while self.i < self.s.len() && self.s[self.i] != b'\'' {
            self.i += if self.s[self.i] == b'\\' { 2 } else { 1 };
        }
        self.i += 1;
    }

    /// The expansions `$(( ))`, `$[ ]`, `$( )`, `${ }`: true when one started at `$`.
    fn dollar(&mut self) -> bool {
        match (self.peek(1), self.peek(2)) {
            (Some(b'('), Some(b'(')) => {
                self.stack.push(Frame::arithmetic(ArithEnd::Parens));
                self.i += 3;
            }
            (Some(b'['), _) => {
                self.stack.push(Frame::arithmetic(ArithEnd::Bracket));
                self.i += 2;
            }
            (Some(b'('), _) => {
                self.stack.push(Frame::command(End::Paren));
                self.i += 2;
            }
            (Some(b'{'), _) => {
                self.stack.push(Frame::Brace {
                    at_name: true,
                    first: true,
                });
                self.i += 2;
            }
            _ => return false,
        }
        true
    }

    fn set_word_start(&mut self, start: bool) {
        if let Some(Frame::Command {
            word_start,
            word,
            cases,
            ident,
            let_args,
            ..
        }) = self.stack.last_mut()
        {
            if start {
                match word.as_slice() {
                    b"case" => *cases += 1,
                    b"esac" => *cases = cases.saturating_sub(1),
                    b"let" if *ident => *let_args = true,
                    _ => {}
                }
                word.clear();
            }
            *ident = false;
            *word_start = start;
        }
    }

    fn command_byte(&mut self) {
        let Some(Frame::Command {
            end,
            parens,
            cases,
            word_start,
            ..
        }) = self.stack.last().cloned()
        else {
            return;
        };
        let b = self.s[self.i];
        match b {
            b'\\' => {
                self.set_word_start(false);
                self.escape();
            }
            b'\'' => {
                self.set_word_start(false);
                self.single_quoted();
            }
            b'"' => {
                self.set_word_start(false);
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            b'`' if end == End::Backtick => {
                self.stack.pop();
                self.i += 1;
            }
            b'`' => {
                self.set_word_start(false);
                self.stack.push(Frame::command(End::Backtick));
                self.i += 1;
            }
            b'$' if self.peek(1) == Some(b'\'') => {
                self.set_word_start(false);
                self.ansi_c();
            }
            b'$' if self.peek(1) == Some(b'"') => {
                self.set_word_start(false);
                self.stack.push(Frame::Double);
                self.i += 2;
            }
            b'$' => {
                self.set_word_start(false);
                if !self.dollar() {
                    self.i += 1;
                }
            }
            b'#' if word_start => {
                self.mark(self.i, Quoting::Comment);
                while self.i < self.s.len() && self.s[self.i] != b'\n' {
                    self.i += 1;
                }
            }
            b'(' if word_start && self.peek(1) == Some(b'(') => {
                self.stack.push(Frame::arithmetic(ArithEnd::Parens));
                self.i += 2;
            }
            b'(' => {
                self.set_word_start(true);
                self.set_parens(parens + 1);
                self.i += 1;
            }
            b')' => {
                self.set_word_start(true);
                if parens > 0 {
                    self.set_parens(parens - 1);
                } else if end == End::Paren && cases == 0 {
                    self.stack.pop();
                }
                self.i += 1;
            }
            b'<' if self.peek(1) == Some(b'<') && self.peek(2) == Some(b'<') => {
                self.set_word_start(true);
                self.i += 3;
            }
            b'<' if self.peek(1) == Some(b'<') => {
                self.set_word_start(true);
                self.i += 2;
                let strip_tabs = self.peek(0) == Some(b'-');
                if strip_tabs {
                    self.i += 1;
                }
                self.heredoc_delimiter(strip_tabs);
            }
            b'\n' => {
                self.set_word_start(true);
                self.end_let();
                self.i += 1;
                self.start_heredoc();
            }
            b';' | b'&' | b'|' => {
                self.set_word_start(true);
                self.end_let();
                self.i += 1;
            }
            b' ' | b'\t' | b'<' | b'>' => {
                self.set_word_start(true);
                self.i += 1;
            }
            b'[' if word_start && self.peek(1) == Some(b'[') => {
                self.set_word_start(false);
                if let Some(end) = numeric_test_end(self.s, self.i + 2) {
                    self.stack.push(Frame::arithmetic(ArithEnd::At(end)));
                }
                self.i += 2;
            }
            // `name[…]`: bash evaluates an array subscript as an expression.
            b'[' if !word_start && self.ident() => {
                self.set_word_start(false);
                self.stack.push(Frame::arithmetic(ArithEnd::Bracket));
                self.i += 1;
            }
            _ => {
                if let Some(Frame::Command {
                    word,
                    word_start,
                    ident,
                    ..
                }) = self.stack.last_mut()
                {
                    // Only short words can be keywords; longer ones need no more.
                    if word.len() <= 4 {
                        word.push(if b.is_ascii_alphabetic() { b } else { b'-' });
                    }
                    *ident = if *word_start {
                        b.is_ascii_alphabetic() || b == b'_'
                    } else {
                        *ident && (b.is_ascii_alphanumeric() || b == b'_')
                    };
                    *word_start = false;
                }
                self.i += 1;
            }
        }
    }

    fn ident(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Command { ident: true, .. }))
    }

    /// A command separator ends the arguments of `let`.
    fn end_let(&mut self) {
        if let Some(Frame::Command { let_args, .. }) = self.stack.last_mut() {
            *let_args = false;
        }
    }

    fn set_arith_parens(&mut self, n: u32) {
        if let Some(Frame::Arithmetic { parens, .. }) = self.stack.last_mut() {
            *parens = n;
        }
    }

    fn set_parens(&mut self, n: u32) {
        if let Some(Frame::Command { parens, .. }) = self.stack.last_mut() {
            *parens = n;
        }
    }

    /// Reads the delimiter word after `<<`/`<<-` and queues the heredoc.
    fn heredoc_delimiter(&mut self, strip_tabs: bool) {
        while matches!(self.peek(0), Some(b' ' | b'\t')) {
            self.i += 1;
        }
        self.mark(self.i, Quoting::HeredocDelimiter);
        let mut delimiter = Vec::new();
        let mut quoted = false;
        let mut quote: Option<u8> = None;
        while let Some(b) = self.peek(0) {
            match (quote, b) {
                (Some(q), _) if b == q => quote = None,
                (Some(_), _) => delimiter.push(b),
                (None, b'\'' | b'"') => {
                    quoted = true;
                    quote = Some(b);
                }
                (None, b'\\') => {
                    quoted = true;
                    self.i += 1;
                    if let Some(next) = self.peek(0) {
                        delimiter.push(next);
                    }
                }
                (None, b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')') => {
                    break;
                }
                (None, _) => delimiter.push(b),
            }
            self.i += 1;
        }
        self.pending.push(Pending {
            delimiter,
            strip_tabs,
            quoted,
        });
    }

    /// At the newline ending a command line: the first queued heredoc body begins.
    fn start_heredoc(&mut self) {
        if !self.pending.is_empty() {
            let next = self.pending.remove(0);
            self.stack.push(Frame::Heredoc(next));
            self.line_start = true;
        }
    }

    fn heredoc_byte(&mut self) {
        let Some(Frame::Heredoc(p)) = self.stack.last() else {
            return;
        };
        let quoted = p.quoted;
        if self.line_start {
            self.line_start = false;
            let rest = &self.s[self.i..];
            let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let mut line = &rest[..len];
            if p.strip_tabs {
                while let [b'\t', tail @ ..] = line {
                    line = tail;
                }
            }
            if line == p.delimiter.as_slice() {
                self.mark(self.i, Quoting::HeredocDelimiter);
                self.i += len + 1;
                self.stack.pop();
                // The next heredoc of the same line starts right after this one.
                self.start_heredoc();
                return;
            }
        }
        let b = self.s[self.i];
        if b == b'\n' {
            self.i += 1;
            self.line_start = true;
            return;
        }
        if quoted {
            self.i += 1;
            return;
        }
        match b {
            b'\\' => self.escape(),
            b'`' => {
                self.stack.push(Frame::command(End::Backtick));
                self.i += 1;
            }
            b'$' => {
                if !self.dollar() {
                    self.i += 1;
                }
            }
            _ => self.i += 1,
        }
    }

    fn double_byte(&mut self) {
        match self.s[self.i] {
            b'"' => {
                self.stack.pop();
                self.i += 1;
            }
            b'\\' => self.escape(),
            b'`' => {
                self.stack.push(Frame::command(End::Backtick));
                self.i += 1;
            }
            b'$' => {
                if !self.dollar() {
                    self.i += 1;
                }
            }
            _ => self.i += 1,
        }
    }

    fn brace_byte(&mut self) {
        if let Some(Frame::Brace {
            at_name: true,
            first,
        }) = self.stack.last().cloned()
        {
            let b = self.s[self.i];
            let name_byte = b.is_ascii_alphanumeric()
                || b == b'_'
                || (first && matches!(b, b'#' | b'!' | b'@' | b'*' | b'?' | b'$'));
            let arithmetic = match b {
                _ if name_byte => None,
                b'[' => Some(ArithEnd::Bracket),
                // `${s:-x}` and kin are operators; `${s:n}` and `${s: -n}` are offsets.
                b':' if !matches!(self.peek(1), Some(b'-' | b'=' | b'?' | b'+')) => {
                    Some(ArithEnd::Brace)
                }
                _ => {
                    self.set_brace_name(false);
                    return self.brace_operand_byte();
                }
            };
            // After a subscript the name may still take an offset: `${a[1]:2}`.
            self.set_brace_name(b != b':');
            if let Some(end) = arithmetic {
                self.stack.push(Frame::arithmetic(end));
            }
            self.i += 1;
            return;
        }
        self.brace_operand_byte();
    }

    fn set_brace_name(&mut self, at: bool) {
        if let Some(Frame::Brace { at_name, first }) = self.stack.last_mut() {
            *at_name = at;
            *first = false;
        }
    }

    /// A byte of `${ }` after the name: patterns, defaults, replacements.
    fn brace_operand_byte(&mut self) {
        let in_command = matches!(self.base(), Some(Frame::Command { .. }));
        let in_double = matches!(self.base(), Some(Frame::Double));
        match self.s[self.i] {
            b'}' => {
                self.stack.pop();
                self.i += 1;
            }
            b'\\' => self.escape(),
            b'\'' if in_command => self.single_quoted(),
            b'"' if in_command || in_double => {
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            b'`' => {
                self.stack.push(Frame::command(End::Backtick));
                self.i += 1;
            }
            b'$' if in_command && self.peek(1) == Some(b'\'') => self.ansi_c(),
            b'$' => {
                if !self.dollar() {
                    self.i += 1;
                }
            }
            _ => self.i += 1,
        }
    }

    fn arithmetic_byte(&mut self) {
        let Some(Frame::Arithmetic { parens, end }) = self.stack.last().cloned() else {
            return;
        };
        let (open, close) = match end {
            ArithEnd::Bracket => (b'[', b']'),
            _ => (b'(', b')'),
        };
        match self.s[self.i] {
            b if b == open => {
                self.set_arith_parens(parens + 1);
                self.i += 1;
            }
            b if b == close && parens > 0 => {
                self.set_arith_parens(parens - 1);
                self.i += 1;
            }
            b')' if end == ArithEnd::Parens => {
                self.stack.pop();
                self.i += if self.peek(1) == Some(b')') { 2 } else { 1 };
            }
            b']' if end == ArithEnd::Bracket => {
                self.stack.pop();
                self.i += 1;
            }
            // The `${ }` frame below closes on this brace.
            b'}' if end == ArithEnd::Brace => {
                self.stack.pop();
            }
            b'"' => {
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            b'\\' => self.escape(),
            b'`' => {
                self.stack.push(Frame::command(End::Backtick));
                self.i += 1;
            }
            b'$' => {
                if !self.dollar() {
                    self.i += 1;
                }
            }
            _ => self.i += 1,
        }
    }
}

/// Where the `[[ ]]` test starting at `from` ends, when it compares numbers
/// (`-eq`, `-lt`, ...), whose operands bash evaluates as expressions.
fn numeric_test_end(s: &[u8], from: usize) -> Option<usize> {
    let rest = s.get(from..)?;
    let len = rest
        .windows(2)
        .position(|w| w == b"]]")
        .unwrap_or(rest.len());
    let test = &rest[..len];
    let numeric = test
        .split(|b| b.is_ascii_whitespace())
        .any(|w| matches!(w, b"-eq" | b"-ne" | b"-lt" | b"-le" | b"-gt" | b"-ge"));
    numeric.then_some(from + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Quoting::*;

    /// The quoting at each `@` in `script` (the `@` itself is ordinary text).
    fn at_marks(script: &str) -> Vec<Quoting> {
        let map = QuotingMap::new(script);
        script
            .match_indices('@')
            .map(|(pos, _)| map.at(pos))
            .collect()
    }

    #[track_caller]
    fn check(script: &str, expected: &[Quoting]) {
        assert_eq!(at_marks(script), expected, "in script: {script:?}");
    }

    #[test]
    fn words_and_quotes() {
        check("echo @ x=@ a@b", &[Bare, Bare, Bare]);
        check(
            r#"echo "a @ b" '@' "@"'@'@"#,
            &[Double, Single, Double, Single, Bare],
        );
        check(r#"echo "it's @" 'say "@"'"#, &[Double, Single]);
        check("echo '' @ \"\" @", &[Bare, Bare]);
        check(r#"echo $'a\'@' @ $"@""#, &[AnsiC, Bare, Double]);
    }

    #[test]
    fn backslashes() {
        check(r"echo \@ \\@ \'@", &[Escaped, Bare, Bare]);
        check(r#"echo "\@ \"@ \\@" \"@"#, &[Escaped, Double, Double, Bare]);
        check("echo a\\\n@", &[Bare]);
        // A backslash inside single quotes is just a character.
        check(r"echo 'a\' @", &[Bare]);
    }

    #[test]
    fn comments_start_only_at_a_word() {
        check(
            "echo a#@ # @ \"@\"\necho @",
            &[Bare, Comment, Comment, Bare],
        );
        check("echo '#' @ ${#x} @", &[Bare, Bare]);
        check("# it's @\necho @", &[Comment, Bare]);
    }

    #[test]
    fn command_substitution_resets_quoting() {
        check(
            r#"echo "a $(echo @ "@" '@') @""#,
            &[Bare, Double, Single, Double],
        );
        check(r#"echo "`echo @ '@'` @" @"#, &[Bare, Single, Double, Bare]);
        check("x=$(cd /; (echo @) ; echo @) @", &[Bare, Bare, Bare]);
        check(
            "x=$(case $y in a) echo @;; esac; echo '@') '@' @",
            &[Bare, Single, Single, Bare],
        );
        check(
            r#"echo "$(echo "$(echo '@')" @)" '@'"#,
            &[Single, Bare, Single],
        );
    }

    #[test]
    fn parameter_expansion_takes_the_surrounding_quoting() {
        check(
            r#"echo ${x:-@} "${x:-@}" ${x:-"@"} ${x:-'@'}"#,
            &[Bare, Double, Double, Single],
        );
        check(r#"echo "${x:-'@'}" @"#, &[Double, Bare]);
        check("echo ${x:-$(echo '@')} @", &[Single, Bare]);
    }

    #[test]
    fn arithmetic() {
        check(
            "echo $((@ + 1)) @ $(( (@) * 2 )) @",
            &[Arithmetic, Bare, Arithmetic, Bare],
        );
        check("((n = @ + 1)); echo @", &[Arithmetic, Bare]);
        check(r#"echo $(( "@" )) "$((@))""#, &[Arithmetic, Arithmetic]);
        check("echo $(( $(echo @) )) $(( 1 << 2 )) @", &[Bare, Bare]);
    }

    #[test]
    fn bash_arithmetic_outside_double_parens() {
        check("echo $[@ + 1] $[ a[@] ] @", &[Arithmetic, Arithmetic, Bare]);
        check(
            r#"echo ${a[@]} "${a[ @ ]}" ${#a[@]} ${a[1]:@} @"#,
            &[Arithmetic, Arithmetic, Arithmetic, Arithmetic, Bare],
        );
        check(
            r#"echo ${s:@} "${s: -@:@}" ${s:1:@} ${s:-@} ${s:=@} ${s:+@} ${s:?@}"#,
            &[
                Arithmetic, Arithmetic, Arithmetic, Arithmetic, Bare, Bare, Bare, Bare,
            ],
        );
        check(
            "echo ${s#@} ${s/@/x} ${!s} ${#s} ${@:@} @",
            &[Bare, Bare, Bare, Arithmetic, Bare],
        );
        check(
            "cat <<EOF
${a[@]} $[@] ${s:@}
EOF
@",
            &[Arithmetic, Arithmetic, Arithmetic, Bare],
        );
        check(
            "a[@]=1 b=@ c[ $(echo @) ]=2 @",
            &[Arithmetic, Bare, Bare, Bare],
        );
        check(
            r#"let "n = @" m=@; echo @"#,
            &[Arithmetic, Arithmetic, Bare],
        );
        check(
            r#"[[ "@" -eq 1 ]] && [[ @ == x ]]; [[ 2 -lt "$((1))" && @ ]]; echo @"#,
            &[Arithmetic, Bare, Arithmetic, Bare],
        );
        // Brackets that are not subscripts stay words.
        check("[ @ = x ] && echo [@] x@[", &[Bare, Bare, Bare]);
    }

    #[test]
    fn heredocs() {
        check(
            "cat <<EOF\n@ \"@\" '@' $(echo '@')\nEOF\necho '@' @",
            &[Heredoc, Heredoc, Heredoc, Single, Single, Bare],
        );
        check(
            "cat <<'EOF'\n@ $(x) \"@\"\nEOF\n@",
            &[QuotedHeredoc, QuotedHeredoc, Bare],
        );
        check("cat <<\"E F\"\n@\nE F\n@", &[QuotedHeredoc, Bare]);
        check("cat <<\\EOF\n@\nEOF\n@", &[QuotedHeredoc, Bare]);
        check("cat <<E\\OF\n@\nEOF\n@", &[QuotedHeredoc, Bare]);
        // `EOF` inside a line, or indented without <<-, does not end the body.
        check(
            "cat <<EOF\nEOF @\n EOF\n@\nEOF\n@",
            &[Heredoc, Heredoc, Bare],
        );
        check("cat <<EOF\n\\@ \\$x @\nEOF", &[Escaped, Heredoc]);
    }

    #[test]
    fn tab_stripped_heredocs() {
        check("\tcat <<-EOF\n\t@\n\t\tEOF\n\techo @", &[Heredoc, Bare]);
        // Without `-`, an indented delimiter is body text.
        check("cat <<EOF\n\tEOF\n@\nEOF\n@", &[Heredoc, Bare]);
    }

    #[test]
    fn several_heredocs_on_one_line() {
        check(
            "cat <<A - <<'B' | wc; echo @\n@ A\nA\n@ B\nB\n@ '@'",
            &[Bare, Heredoc, QuotedHeredoc, Bare, Single],
        );
    }

    #[test]
    fn heredoc_delimiter_and_here_strings() {
        check(
            "cat <<@x\nbody\n@x\n",
            &[HeredocDelimiter, HeredocDelimiter],
        );
        check(
            "cat <<< @ ; cat <<<\"@\" ; cat <<<'@'",
            &[Bare, Double, Single],
        );
        // A here-string is not a heredoc: the next line is a command.
        check("cat <<< x\necho @", &[Bare]);
    }

    #[test]
    fn unterminated_constructs_run_to_the_end() {
        check("echo '@", &[Single]);
        check("echo \"@", &[Double]);
        check("cat <<EOF\n@", &[Heredoc]);
        check("echo $(echo @", &[Bare]);
        check("echo \\", &[]);
        let map = QuotingMap::new("");
        assert_eq!(map.at(0), Bare);
    }

    #[test]
    fn multibyte_text_keeps_offsets() {
        check("echo 'ü@' ü@ \"€@\"", &[Single, Bare, Double]);
    }

    #[test]
    fn references_by_context() {
        assert_eq!(Bare.reference("V").as_deref(), Some("\"${V}\""));
        assert_eq!(Double.reference("V").as_deref(), Some("${V}"));
        assert_eq!(Heredoc.reference("V").as_deref(), Some("${V}"));
        for q in [
            Single,
            AnsiC,
            QuotedHeredoc,
            HeredocDelimiter,
            Escaped,
            Arithmetic,
        ] {
            assert_eq!(q.reference("V"), None, "{q:?}");
        }
    }
}
