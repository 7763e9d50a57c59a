//! Socket frame decoding and dispatch checks: any byte stream, split into
//! reads of fuzzed sizes, through the daemon's frame decoder, request decoder,
//! `hello` check, method table and params parsing. Frames never exceed the
//! cap, and the decoder's frames are exactly the stream's lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_daemon::api::frame::{Frame, FrameDecoder, check_hello, decode_request};
use sluice_daemon::api::{check_params, required_role};
use sluice_shared::method::{Hello, Method};

const MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let mut decoder = FrameDecoder::new(MAX);
    let mut frames = Vec::new();
    for chunk in stream.chunks(step) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (used, frame) = decoder.push(rest);
            assert!(
                used > 0 && used <= rest.len(),
                "the decoder must make progress"
            );
            rest = &rest[used..];
            frames.extend(frame);
        }
    }
    frames.extend(decoder.finish());
    // Each frame is one line of the stream: short ones intact, long ones refused.
    let mut lines: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    if stream.ends_with(b"\n") || stream.is_empty() {
        lines.pop();
    }
    assert_eq!(frames.len(), lines.len(), "one frame per line");
    for (frame, line) in frames.iter().zip(&lines) {
        match frame {
            Frame::Line(bytes) => assert_eq!(bytes.as_slice(), *line),
            Frame::TooLarge => assert!(line.len() > MAX),
        }
    }
    for frame in frames {
        let Frame::Line(bytes) = frame else { continue };
        let Ok(Some(request)) = decode_request(&bytes) else {
            continue;
        };
        if request.method == Hello::NAME {
            let _ = check_hello(request.params);
            continue;
        }
        // The method table's role and params type (as its handler reads them).
        let _ = required_role(&request.method);
        let _ = check_params(&request.method, request.params);
    }
});
