//! Every committed fuzz corpus (`fuzz/corpus/<target>/`, what the fuzzer
//! found interesting, minimised) and every input that once failed
//! (`fuzz/regressions/<target>/`, kept apart so a merge never drops one)
//! replayed through its target's body in `cap4::fuzz`, on a normal build:
//! checked in CI without libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs`.
const TARGETS: [(&str, Target); 6] = [
    ("netstring_decoder", cap4::fuzz::netstring_decoder),
    ("baresip_message", cap4::fuzz::baresip_message),
    ("agent_message", cap4::fuzz::agent_message),
    ("wav", cap4::fuzz::wav),
    ("config", cap4::fuzz::config),
    ("http", cap4::fuzz::http),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn replay(name: &str, target: Target) {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    if let Ok(regressions) = std::fs::read_dir(fuzz_dir().join("regressions").join(name)) {
        files.extend(regressions.map(|entry| entry.expect("a regression").path()));
    }
    files.sort();
    assert!(files.len() >= 4, "{name}: a corpus of {} inputs is no corpus", files.len());
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("a corpus file");
            catch_unwind(AssertUnwindSafe(|| target(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name}: {} of {} inputs failed: {failed:#?}", failed.len(), files.len());
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_replay() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|entry| entry.expect("an entry").path().file_stem().expect("a name").to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_string()).collect();
    replayed.sort();
    assert_eq!(on_disk, replayed);
}

#[test]
fn netstring_decoder_corpus() {
    replay("netstring_decoder", cap4::fuzz::netstring_decoder);
}

#[test]
fn baresip_message_corpus() {
    replay("baresip_message", cap4::fuzz::baresip_message);
}

#[test]
fn agent_message_corpus() {
    replay("agent_message", cap4::fuzz::agent_message);
}

#[test]
fn wav_corpus() {
    replay("wav", cap4::fuzz::wav);
}

#[test]
fn config_corpus() {
    replay("config", cap4::fuzz::config);
}

#[test]
fn http_corpus() {
    replay("http", cap4::fuzz::http);
}

/// The HTTP target's checks bite: a token-less request for the call list is
/// refused, and the same request with the token is answered (so "no 2xx
/// without the token" is a property of the API, not of a dead bench).
#[test]
fn the_http_target_sees_real_answers() {
    let plain = b"GET /api/calls HTTP/1.1\r\nHost: localhost\r\n\r\n";
    cap4::fuzz::http(plain);
    let with_token = b"GET /api/calls HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-token-5f3a9c1e\r\n\r\n";
    assert_eq!(cap4::fuzz::http_statuses(with_token), vec![200]);
    assert_eq!(cap4::fuzz::http_statuses(plain), vec![401]);
    let rebound = b"GET /api/calls HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer fuzz-token-5f3a9c1e\r\n\r\n";
    assert_eq!(cap4::fuzz::http_statuses(rebound), vec![403]);
}
