//! The answer classifier and the early-media analyser allocate nothing per
//! frame: a counting global allocator (per thread) around `Amd::push` over
//! whole recordings, before, at and after the verdict, and around
//! `EarlyMedia::push` and `EarlyMedia::report`.

use std::path::Path;

use cap4::amd::{Amd, AmdConfig, CALL_FRAME, EarlyMedia};

use crate::alloc_count::thread_allocations as allocations;

#[test]
fn push_never_allocates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amd");
    // A human pickup, a voicemail with a two-tone beep, a SIT announcement.
    for clip in ["synthetic/clip_0008.flac", "synthetic/clip_0002.flac", "synthetic/clip_0034.flac"] {
        let mut reader = claxon::FlacReader::open(dir.join(clip)).unwrap();
        let samples: Vec<i16> = reader.samples().map(|s| s.unwrap() as i16).collect();
        let mut amd = Amd::new(&AmdConfig::default()).unwrap();
        let before = allocations();
        let mut verdicts = 0;
        for frame in samples.chunks(CALL_FRAME) {
            if amd.push(frame).is_some() {
                verdicts += 1;
            }
        }
        let verdict = amd.finish();
        let after = allocations();
        assert_eq!(after - before, 0, "{clip}: {} allocations in push", after - before);
        assert_eq!(verdicts, 1, "{clip}: {verdict:?}");

        let mut early = EarlyMedia::new(&AmdConfig::default()).unwrap();
        let before = allocations();
        let mut sits = 0;
        for frame in samples.chunks(CALL_FRAME) {
            early.push(frame);
            sits += usize::from(early.report().sit.is_some());
        }
        let after = allocations();
        assert_eq!(after - before, 0, "{clip}: {} allocations in the early-media analyser", after - before);
        assert_eq!(sits > 0, clip.ends_with("0034.flac"), "{clip}: {:?}", early.report());
    }
    // The counter does count (the test can fail).
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > before && v.len() == 10);
}
