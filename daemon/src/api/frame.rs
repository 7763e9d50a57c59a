//! Reading the wire: splitting bytes into bounded newline-terminated frames
//! and frames into JSON-RPC requests. Pure functions, so they can be fuzzed
//! and tested without a socket.

use serde_json::Value;
use sluice_shared::protocol::{
    ErrorCode, HelloParams, PROTOCOL_MAJOR, Request, RpcError, protocol_version,
};

/// One frame read from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of one line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the cap; its bytes were dropped as they came.
    TooLarge,
}

/// Splits a byte stream into frames of at most `max` bytes, holding no more
/// than `max` bytes of an unfinished line however long it grows.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
    too_large: bool,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            too_large: false,
        }
    }

    /// Takes bytes from `input` up to and including the first newline; returns
    /// how many bytes it used and the frame that newline completed, if any.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        let (chunk, used) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (&input[..i], Some(i + 1)),
            None => (input, None),
        };
        if !self.too_large {
            if self.buf.len() + chunk.len() > self.max {
                // Keep reading to the end of the line, but drop what we read.
                self.too_large = true;
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(chunk);
            }
        }
        match used {
            Some(n) => (n, Some(self.take())),
            None => (input.len(), None),
        }
    }

    /// At the end of the stream: the unterminated last frame, if there is one.
    pub fn finish(&mut self) -> Option<Frame> {
        (self.too_large || !self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Frame {
        if std::mem::take(&mut self.too_large) {
            self.buf = Vec::new();
            Frame::TooLarge
        } else {
            Frame::Line(std::mem::take(&mut self.buf))
        }
    }
}

/// Reads one frame; `None` at the end of the stream.
pub(crate) async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    decoder: &mut FrameDecoder,
) -> std::io::Result<Option<Frame>> {
    use tokio::io::AsyncBufReadExt;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(decoder.finish());
        }
        let (used, frame) = decoder.push(available);
        reader.consume(used);
        if frame.is_some() {
            return Ok(frame);
        }
    }
}

/// A frame that is not a request: the reply's id (null when unreadable) and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BadFrame {
    /// The id to answer with.
    pub id: Value,
    /// What is wrong.
    pub error: RpcError,
}

/// Reads a JSON-RPC 2.0 request from a frame; `Ok(None)` for a blank line.
pub fn decode_request(line: &[u8]) -> Result<Option<Request>, Box<BadFrame>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = serde_json::from_slice::<Value>(line).map_err(|e| {
        Box::new(BadFrame {
            id: Value::Null,
            error: RpcError::new(ErrorCode::ParseError, format!("invalid JSON: {e}")),
        })
    })?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    match serde_json::from_value::<Request>(value) {
        Ok(r) if r.jsonrpc == "2.0" => Ok(Some(r)),
        Ok(_) | Err(_) => Err(Box::new(BadFrame {
            id,
            error: RpcError::new(
                ErrorCode::InvalidRequest,
                "not a JSON-RPC 2.0 request (needs \"jsonrpc\": \"2.0\" and \"method\")",
            ),
        })),
    }
}

/// Checks `hello`'s params: a client of another protocol major is refused.
pub fn check_hello(params: Value) -> Result<HelloParams, RpcError> {
    let p: HelloParams = super::dispatch::parse(params)?;
    let major = p
        .protocol
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if major != Some(PROTOCOL_MAJOR) {
        return Err(RpcError::new(
            ErrorCode::Handshake,
            format!(
                "this daemon speaks protocol {}, not {}; use a sluice client of the same major version",
                protocol_version(),
                p.protocol
            ),
        )
        .with_data(serde_json::json!({ "protocol": protocol_version() })));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let (used, f) = d.push(rest);
                rest = &rest[used..];
                out.extend(f);
            }
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn lines_split_across_reads_are_joined_and_long_ones_dropped() {
        assert_eq!(
            frames(8, &[b"ab", b"c\nde", b"f\n", b"0123456789", b"x\nok"]),
            [
                Frame::Line(b"abc".to_vec()),
                Frame::Line(b"def".to_vec()),
                Frame::TooLarge,
                Frame::Line(b"ok".to_vec()),
            ]
        );
        assert_eq!(frames(8, &[b"\n"]), [Frame::Line(Vec::new())]);
        assert_eq!(frames(2, &[b"abc"]), [Frame::TooLarge]);
        assert!(frames(2, &[]).is_empty());
    }

    #[test]
    fn requests_are_read_and_bad_frames_say_why() {
        assert_eq!(decode_request(b"  \t"), Ok(None));
        let r = decode_request(br#"{"jsonrpc":"2.0","id":3,"method":"status"}"#)
            .expect("valid")
            .expect("a request");
        assert_eq!(r.method, "status");
        let bad = decode_request(b"{\"id\":").unwrap_err();
        assert!(bad.error.is(ErrorCode::ParseError) && bad.id.is_null());
        let bad = decode_request(br#"{"jsonrpc":"1.0","id":"x\n","method":"status"}"#).unwrap_err();
        assert!(bad.error.is(ErrorCode::InvalidRequest));
        assert_eq!(bad.id, Value::from("x\n"));
        let bad = decode_request(br#"[1,2]"#).unwrap_err();
        assert!(bad.error.is(ErrorCode::InvalidRequest));
    }
}
