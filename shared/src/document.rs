//! A pipeline file read into a JSON value plus an index from document paths to
//! source positions, so that every later check can point at a line and column
//! whichever of the three syntaxes the file was written in.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use crate::diagnostic::Diagnostic;

/// The syntax of a pipeline file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` / `.yml`
    Yaml,
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl Format {
    /// The format for a file name, or `None` when it is not a pipeline file.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Self::Yaml),
            "toml" => Some(Self::Toml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// A 1-based line and column in a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

/// One step of a path into a document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into a document, displayed like `nodes[2].needs[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DocPath(pub Vec<Seg>);

impl DocPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// This path followed by `other`.
    pub fn join(&self, other: &DocPath) -> Self {
        let mut segs = self.0.clone();
        segs.extend(other.0.iter().cloned());
        Self(segs)
    }

    /// The path one step up, or `None` at the root.
    pub fn parent(&self) -> Option<Self> {
        let mut segs = self.0.clone();
        segs.pop()?;
        Some(Self(segs))
    }

    /// Converts a serde_path_to_error path.
    pub fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let segs = path
            .iter()
            .filter_map(|seg| match seg {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        Self(segs)
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Where a value sits in the source: its key (for mapping entries) and the value itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The position of the key, for an entry of a mapping.
    pub key: Option<Pos>,
    /// The position where the value starts.
    pub value: Pos,
}

/// A parsed pipeline file: its data and where each part of it is.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file's content as JSON data.
    pub value: Value,
    locations: HashMap<DocPath, Span>,
}

impl Document {
    /// Parses `source` written in `format`; a syntax error comes back as a located diagnostic.
    pub fn parse(source: &str, format: Format) -> Result<Self, Diagnostic> {
        let value = match format {
            Format::Yaml => parse_yaml_value(source)?,
            Format::Toml => toml::from_str::<Value>(source).map_err(|e| {
                let pos = e.span().map(|s| LineIndex::new(source).pos(s.start));
                Diagnostic::error(&DocPath::root(), format!("invalid TOML: {}", e.message()))
                    .at(pos)
            })?,
            Format::Json => serde_json::from_str::<Value>(source).map_err(|e| {
                let msg = strip_json_position(&e.to_string());
                Diagnostic::error(&DocPath::root(), format!("invalid JSON: {msg}")).at(Some(Pos {
                    line: clamp_u32(e.line()),
                    column: clamp_u32(e.column()),
                }))
            })?,
        };
        let locations = match format {
            // JSON is a subset of YAML's flow syntax, so one walker serves both.
            Format::Yaml | Format::Json => yaml_locations(source),
            Format::Toml => toml_locations(source),
        };
        Ok(Self { value, locations })
    }

    /// A document built from a value that has no source (positions are unknown).
    pub fn from_value(value: Value) -> Self {
        Self {
            value,
            locations: HashMap::new(),
        }
    }

    /// Where the value at `path` starts, or the nearest enclosing value that is known.
    pub fn value_pos(&self, path: &DocPath) -> Option<Pos> {
        self.nearest(path).map(|s| s.value)
    }

    /// Where the key of the entry at `path` is (falling back to its value, then its parents).
    pub fn key_pos(&self, path: &DocPath) -> Option<Pos> {
        self.nearest(path).map(|s| s.key.unwrap_or(s.value))
    }

    fn nearest(&self, path: &DocPath) -> Option<Span> {
        let mut path = path.clone();
        loop {
            if let Some(span) = self.locations.get(&path) {
                return Some(*span);
            }
            path = path.parent()?;
        }
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn strip_json_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn parse_yaml_value(source: &str) -> Result<Value, Diagnostic> {
    // An empty file is an empty document, reported later as an empty pipeline.
    if source.trim().is_empty() {
        return Ok(Value::Null);
    }
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<Value>(source, options).map_err(|e| {
        let pos = e.location().and_then(|l| {
            let line = u32::try_from(l.line()).ok()?;
            let column = u32::try_from(l.column()).ok()?;
            (line > 0).then_some(Pos { line, column })
        });
        let msg = e.without_snippet().to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_owned(),
            None => msg,
        };
        Diagnostic::error(&DocPath::root(), format!("invalid YAML: {msg}")).at(pos)
    })
}

enum Frame {
    Seq {
        path: DocPath,
        next: usize,
    },
    Map {
        path: DocPath,
        key: Option<(String, Pos)>,
    },
    // A mapping used as a key: its contents are not addressable by path.
    Skip {
        depth: usize,
    },
}

/// Walks the YAML event stream and records where each path's key and value start.
fn yaml_locations(source: &str) -> HashMap<DocPath, Span> {
    let mut locations = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut seen_root = false;
    for item in Parser::new_from_str(source) {
        let Ok((event, span)) = item else { break };
        let pos = Pos {
            line: clamp_u32(span.start.line()),
            column: clamp_u32(span.start.col() + 1),
        };
        let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
        let is_node = opens || matches!(event, Event::Scalar(..) | Event::Alias(..));
        if let Some(Frame::Skip { depth }) = stack.last_mut() {
            if opens {
                *depth += 1;
            } else if matches!(event, Event::SequenceEnd | Event::MappingEnd) {
                if *depth == 0 {
                    stack.pop();
                } else {
                    *depth -= 1;
                }
            }
            continue;
        }
        match event {
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                continue;
            }
            Event::DocumentEnd if seen_root => break,
            _ if !is_node => continue,
            _ => {}
        }
        // A node: either a mapping key or a value somewhere.
        let (path, key_pos) = match stack.last_mut() {
            None => {
                if seen_root {
                    break;
                }
                seen_root = true;
                (DocPath::root(), None)
            }
            Some(Frame::Map { key, .. }) if key.is_none() => {
                match event {
                    Event::Scalar(text, ..) => *key = Some((text.into_owned(), pos)),
                    _ => {
                        *key = Some((String::from("?"), pos));
                        if opens {
                            stack.push(Frame::Skip { depth: 0 });
                        }
                    }
                }
                continue;
            }
            Some(Frame::Map { path, key }) => {
                let (name, kpos) = key.take().unwrap_or_default();
                (path.key(&name), Some(kpos))
            }
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                (p, None)
            }
            Some(Frame::Skip { .. }) => continue,
        };
        locations.insert(
            path.clone(),
            Span {
                key: key_pos,
                value: pos,
            },
        );
        match event {
            Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
            Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
            _ => {}
        }
    }
    locations
}

impl Default for Pos {
    fn default() -> Self {
        Self { line: 1, column: 1 }
    }
}

/// Byte offsets to line and column.
struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self { source, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let end = offset.min(self.source.len());
        let column = self
            .source
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        Pos {
            line: clamp_u32(line),
            column: clamp_u32(column),
        }
    }
}

fn toml_locations(source: &str) -> HashMap<DocPath, Span> {
    use toml::de::{DeTable, DeValue};
    let mut locations = HashMap::new();
    let Ok(table) = DeTable::parse(source) else {
        return locations;
    };
    let index = LineIndex::new(source);

    fn walk(
        value: &toml::Spanned<DeValue<'_>>,
        path: DocPath,
        key: Option<Pos>,
        index: &LineIndex<'_>,
        out: &mut HashMap<DocPath, Span>,
    ) {
        out.insert(
            path.clone(),
            Span {
                key,
                value: index.pos(value.span().start),
            },
        );
        match value.get_ref() {
            DeValue::Table(table) => walk_table(table, &path, index, out),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, path.index(i), None, index, out);
                }
            }
            _ => {}
        }
    }

    fn walk_table(
        table: &DeTable<'_>,
        path: &DocPath,
        index: &LineIndex<'_>,
        out: &mut HashMap<DocPath, Span>,
    ) {
        for (k, v) in table {
            let key_pos = index.pos(k.span().start);
            walk(v, path.key(k.get_ref()), Some(key_pos), index, out);
        }
    }

    locations.insert(
        DocPath::root(),
        Span {
            key: None,
            value: Pos::default(),
        },
    );
    walk_table(table.get_ref(), &DocPath::root(), &index, &mut locations);
    locations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[Seg]) -> DocPath {
        DocPath(s.to_vec())
    }

    #[test]
    fn yaml_positions_of_keys_and_values() {
        let src = "nodes:\n  - id: a\n    kind: shell\n  - id: b\n";
        let doc = Document::parse(src, Format::Yaml).unwrap();
        let id_b = p(&[
            Seg::Key("nodes".into()),
            Seg::Index(1),
            Seg::Key("id".into()),
        ]);
        assert_eq!(doc.value_pos(&id_b), Some(Pos { line: 4, column: 9 }));
        assert_eq!(doc.key_pos(&id_b), Some(Pos { line: 4, column: 5 }));
    }

    #[test]
    fn json_positions_use_the_yaml_walker() {
        let src = "{\n  \"nodes\": [\n    {\"id\": \"a\"}\n  ]\n}\n";
        let doc = Document::parse(src, Format::Json).unwrap();
        let id = p(&[
            Seg::Key("nodes".into()),
            Seg::Index(0),
            Seg::Key("id".into()),
        ]);
        assert_eq!(doc.key_pos(&id), Some(Pos { line: 3, column: 6 }));
    }

    #[test]
    fn toml_positions_of_array_tables() {
        let src = "name = \"x\"\n\n[[nodes]]\nid = \"a\"\n\n[[nodes]]\nid = \"b\"\n";
        let doc = Document::parse(src, Format::Toml).unwrap();
        let id = p(&[
            Seg::Key("nodes".into()),
            Seg::Index(1),
            Seg::Key("id".into()),
        ]);
        assert_eq!(doc.key_pos(&id), Some(Pos { line: 7, column: 1 }));
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = Document::parse("a: [1, 2\nb: 3\n", Format::Yaml).unwrap_err();
        assert!(err.line.is_some(), "{err}");
        let err = Document::parse("{\n \"a\": 1,,\n}", Format::Json).unwrap_err();
        assert_eq!(err.line, Some(2));
        let err = Document::parse("a = 1\nb = = 2\n", Format::Toml).unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn paths_display_like_accessors() {
        let path = DocPath::root().key("nodes").index(2).key("needs").index(0);
        assert_eq!(path.to_string(), "nodes[2].needs[0]");
        assert_eq!(DocPath::root().key("a b").to_string(), "[\"a b\"]");
    }
}
