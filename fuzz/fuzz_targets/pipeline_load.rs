//! Pipeline loading: any bytes as a YAML, TOML or JSON pipeline file (the
//! first byte picks the syntax). Loading must report diagnostics, never panic,
//! and a file it accepts must carry a pipeline.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let name = match pick % 4 {
        0 => "fuzz.yaml",
        1 => "fuzz.yml",
        2 => "fuzz.toml",
        _ => "fuzz.json",
    };
    let loaded = sluice_shared::load_source(Path::new(name), text, &Default::default());
    if loaded.is_valid() {
        assert!(loaded.pipeline.is_some(), "a valid file without a pipeline");
    } else {
        assert!(
            !loaded.diagnostics.is_empty(),
            "an invalid file without a diagnostic"
        );
    }
});
