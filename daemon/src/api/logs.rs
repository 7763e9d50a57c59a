//! Stored log lines over the socket: `logs.get`.

use serde::Serialize;
use sluice_shared::protocol::{ErrorCode, LOGS_PAGE_BYTES, LogsPage, LogsParams, RpcError};

use super::dispatch::Cx;
use super::errors::store_err;

/// Rows read from the store at a time while filling a `logs.get` page, so a
/// page never holds more than this many lines in memory beyond what it returns.
const LOG_READ_CHUNK: u32 = 256;

/// `logs.get`: one page of stored lines, bounded by count and bytes.
pub(crate) async fn get(cx: &Cx<'_>, p: LogsParams) -> Result<LogsPage, RpcError> {
    let store = cx.engine.store();
    let record =
        store.run(p.run).await.map_err(store_err)?.ok_or_else(|| {
            RpcError::new(ErrorCode::NotFound, format!("run {} not found", p.run))
        })?;
    let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
    let mut after = i64::try_from(p.after.unwrap_or(0)).unwrap_or(i64::MAX);
    let mut page = LogPage::new(limit, LOGS_PAGE_BYTES);
    loop {
        // One row beyond what still fits says whether another page follows.
        let want = (limit - page.count() + 1).min(LOG_READ_CHUNK);
        let rows = store
            .logs_after(p.run, p.node.as_deref(), p.attempt, after, i64::from(want))
            .await
            .map_err(store_err)?;
        let short = rows.len() < want as usize;
        for (id, line) in rows {
            if !page.push(id, line) {
                break;
            }
            after = id;
        }
        if page.more || short {
            break;
        }
    }
    let next = page
        .next
        .unwrap_or(i64::try_from(p.after.unwrap_or(0)).unwrap_or(i64::MAX));
    Ok(LogsPage {
        lines: page.lines,
        next: u64::try_from(next).unwrap_or(0),
        finished: record.state.is_finished(),
        more: page.more,
    })
}

/// Lines of one `logs.get` reply, bounded by count and by encoded size.
struct LogPage {
    lines: Vec<sluice_shared::run::LogLine>,
    next: Option<i64>,
    bytes: usize,
    limit: u32,
    max_bytes: usize,
    /// A line was left out for lack of room.
    more: bool,
}

impl LogPage {
    fn new(limit: u32, max_bytes: usize) -> Self {
        Self {
            lines: Vec::new(),
            next: None,
            bytes: 0,
            limit,
            max_bytes,
            more: false,
        }
    }

    fn count(&self) -> u32 {
        u32::try_from(self.lines.len()).unwrap_or(u32::MAX)
    }

    /// Adds a line if it fits; the first line always does, so paging advances.
    fn push(&mut self, id: i64, line: sluice_shared::run::LogLine) -> bool {
        let size = encoded_len(&line);
        if self.count() >= self.limit
            || (!self.lines.is_empty() && self.bytes + size > self.max_bytes)
        {
            self.more = true;
            return false;
        }
        self.bytes += size + 1;
        self.lines.push(line);
        self.next = Some(id);
        true
    }
}

/// Bytes `value` takes as JSON, counted without building the text.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail; a type that cannot serialize counts what it wrote.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}
