//! The fuzz targets' properties (fuzz/properties.rs), replayed over the
//! committed corpus (fuzz/corpus/<target>/): what the fuzzers found keeps
//! being checked by `cargo test`. docs/security.md says how to fuzz.

include!("../fuzz/properties.rs");

fn replay(target: &str, property: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        property(&std::fs::read(&path).unwrap());
        seen += 1;
    }
    assert!(seen > 0, "no corpus for {target}");
}

#[test]
fn canonical_path_corpus() {
    replay("canonical_path", canonical_path);
}

#[test]
fn request_target_corpus() {
    replay("request_target", request_target);
}

#[test]
fn host_corpus() {
    replay("host", host);
}

#[test]
fn forwarded_for_corpus() {
    replay("forwarded_for", forwarded_for);
}

#[test]
fn cookies_corpus() {
    replay("cookies", cookies);
}

#[test]
fn tokens_corpus() {
    replay("tokens", tokens);
}

#[test]
fn config_corpus() {
    replay("config", config);
}
