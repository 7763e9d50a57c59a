//! Socket frame decoding and dispatch checks: any byte stream, split into
//! reads of fuzzed sizes, through the daemon's frame decoder, request decoder,
//! `hello` check, method table and params parsing. Frames never exceed the
//! cap, and the decoder's frames are exactly the stream's lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_daemon::api::frame::{Frame, FrameDecoder, check_hello, decode_request};
use sluice_daemon::api::{parse_params, required_role};
use sluice_shared::protocol as p;

const MAX: usize = 64;

fn params(method: &str, v: Value) {
    // The params type of each method, as its handler reads it.
    let _ = match method {
        "pipelines.get" | "pipelines.enable" | "pipelines.disable" => {
            parse_params::<p::PipelineRef>(v).map(drop)
        }
        "pipelines.trigger" => parse_params::<p::TriggerParams>(v).map(drop),
        "runs.list" => parse_params::<p::RunsListParams>(v).map(drop),
        "runs.get" | "runs.cancel" => parse_params::<p::RunRef>(v).map(drop),
        "runs.retry" => parse_params::<p::RetryParams>(v).map(drop),
        "runs.resolve" => parse_params::<p::ResolveParams>(v).map(drop),
        "logs.get" => parse_params::<p::LogsParams>(v).map(drop),
        "approvals.decide" => parse_params::<p::DecideParams>(v).map(drop),
        "audit.list" => parse_params::<p::AuditListParams>(v).map(drop),
        "schedules.pause" | "schedules.resume" => parse_params::<p::ScheduleRef>(v).map(drop),
        "limits.usage" => parse_params::<p::LimitsUsageParams>(v).map(drop),
        "limits.explain" => parse_params::<p::LimitsExplainParams>(v).map(drop),
        "tokens.create" => parse_params::<p::TokenCreateParams>(v).map(drop),
        "tokens.revoke" => parse_params::<p::TokenRevokeParams>(v).map(drop),
        "subscribe" => parse_params::<p::SubscribeParams>(v).map(drop),
        _ => Ok(()),
    };
}

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
        if request.method == "hello" {
            let _ = check_hello(request.params);
            continue;
        }
        let _ = required_role(&request.method);
        params(&request.method, request.params);
    }
});
