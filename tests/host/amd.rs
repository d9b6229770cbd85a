//! `cap4 amd FILE.wav` end to end: WAVs written from the corpus fixtures (FLAC)
//! into a temporary folder, classified by the real binary; plus a stable sanity
//! floor for the whole synthetic corpus through the library.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amd")
}

fn decode_flac(path: &Path) -> Vec<i16> {
    let mut reader = claxon::FlacReader::open(path).unwrap();
    assert_eq!(reader.streaminfo().sample_rate, 8000);
    reader.samples().map(|s| s.unwrap() as i16).collect()
}

/// A 16-bit PCM WAV file of `channels` interleaved channels.
fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    b.extend_from_slice(&(2 * channels).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    std::fs::write(path, b).unwrap();
}

fn temp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("amd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `cap4 amd` on a fixture clip written as an 8 kHz mono WAV.
fn amd_on(corpus: &str, clip: &str) -> Value {
    let samples = decode_flac(&fixtures().join(corpus).join(clip));
    let wav = temp(&clip.replace(".flac", ".wav"));
    write_wav(&wav, 8000, 1, &samples);
    run_ok(&wav)
}

fn run(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cap4")).arg("amd").arg(path).output().unwrap()
}

fn run_ok(path: &Path) -> Value {
    let out = run(path);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    for key in ["verdict", "cause", "decided_at_ms", "speech_start_ms", "speech_end_ms", "speech_total_ms", "beep_start_ms"] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert!(v["decided_at_ms"].as_u64().is_some(), "{v}");
    v
}

#[test]
fn short_hello_then_silence_is_human_within_a_second_of_its_end() {
    // "Да-да?" from 1.121 s to 1.451 s, then silence.
    let v = amd_on("synthetic", "clip_0008.flac");
    assert_eq!(v["verdict"], "human", "{v}");
    assert_eq!(v["cause"], "short_greeting_then_pause");
    let decided = v["decided_at_ms"].as_u64().unwrap();
    assert!((1451 + 300..=1451 + 1000).contains(&decided), "{v}");
    let start = v["speech_start_ms"].as_u64().unwrap();
    assert!((1050..=1200).contains(&start), "{v}");
    assert_eq!(v["beep_start_ms"], Value::Null);
}

#[test]
fn long_voicemail_greeting_with_a_beep_is_machine() {
    // A 6 s personal greeting from 1.386 s, beep at 7.7 s.
    let v = amd_on("synthetic", "clip_0023.flac");
    assert_eq!(v["verdict"], "machine", "{v}");
    assert_eq!(v["cause"], "long_greeting");
    let decided = v["decided_at_ms"].as_u64().unwrap();
    assert!(decided < 7700, "decided before the beep: {v}");
    // Real voices: an Italian voicemail prompt.
    let v = amd_on("real", "real_0021.flac");
    assert_eq!(v["verdict"], "machine", "{v}");
}

#[test]
fn other_rates_and_channel_counts_are_resampled_and_downmixed() {
    // "oh" (2.301–2.801 s) as 16 kHz stereo: every sample held twice, the
    // right channel at half level.
    let samples = decode_flac(&fixtures().join("real/real_0003.flac"));
    let stereo: Vec<i16> = samples.iter().flat_map(|&s| [s, s / 2, s, s / 2]).collect();
    let wav = temp("real_0003_16k_stereo.wav");
    write_wav(&wav, 16000, 2, &stereo);
    let v = run_ok(&wav);
    assert_eq!(v["verdict"], "human", "{v}");
    let end = v["speech_end_ms"].as_u64().unwrap();
    assert!((2750..=2900).contains(&end), "timing kept through resampling: {v}");
}

#[test]
fn a_bad_file_is_a_data_error_naming_the_file() {
    let bad = temp("not-a-wav.wav");
    std::fs::write(&bad, b"this is not audio").unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-a-wav.wav") && stderr.contains("RIFF"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = run(&temp("missing.wav"));
    assert_eq!(out.status.code(), Some(65));

    let out = Command::new(env!("CARGO_BIN_EXE_cap4")).arg("amd").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// Floors, not the goals: the figures against the goals come from
/// `cargo run --release --example amd_corpus` (synthetic 97.5 % accuracy, real
/// 98.9 %, no person missed, human delay p50 580 / 533 ms, machine p50 3.65 /
/// 3.89 s). The classifier is deterministic, so this cannot flake; it fails if
/// a change breaks detection broadly, hangs up on any person of either corpus,
/// or slows either verdict well past today's figures.
#[test]
fn corpus_sanity_floors() {
    // corpus, clips, accuracy floor %, human delay p50 ceiling, machine p50 ceiling (ms)
    for (corpus, clips, accuracy_floor, human_p50_max, machine_p50_max) in [("synthetic", 160, 95, 650, 4200), ("real", 90, 96, 650, 4300)]
    {
        let dir = fixtures().join(corpus);
        let labels = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
        let config = cap4::amd::AmdConfig::default();
        let (mut right, mut total, mut humans, mut humans_right) = (0, 0, 0, 0);
        let (mut human_delay, mut machine_time) = (Vec::new(), Vec::new());
        for line in labels.lines().skip(1) {
            // file,label,lang,speech_start_s,speech_end_s,... (no comma before notes)
            let fields: Vec<&str> = line.splitn(6, ',').collect();
            let (file, label) = (fields[0], fields[1]);
            let speech_end_ms = fields[4].parse::<f64>().unwrap() * 1000.0;
            let verdict = cap4::amd::classify(&config, &decode_flac(&dir.join(file))).unwrap();
            total += 1;
            if verdict.kind.as_str() == label {
                right += 1;
                let at = f64::from(verdict.decided_at_ms);
                if label == "human" { human_delay.push(at - speech_end_ms) } else { machine_time.push(at) }
            }
            if label == "human" {
                humans += 1;
                humans_right += usize::from(verdict.kind.as_str() == "human");
            }
        }
        assert_eq!(total, clips, "{corpus}");
        assert!(right * 100 >= total * accuracy_floor, "{corpus}: accuracy {right}/{total}");
        assert!(humans_right * 100 >= humans * 99, "{corpus}: human recall {humans_right}/{humans}");
        let p50 = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[(v.len() - 1) / 2]
        };
        let (h, m) = (p50(&mut human_delay), p50(&mut machine_time));
        assert!(h <= human_p50_max as f64, "{corpus}: human delay p50 {h} ms");
        assert!(m <= machine_p50_max as f64, "{corpus}: machine verdict p50 {m} ms");
    }
}

/// The early-media analyser on corpus clips: the seven synthetic clips that open
/// with special information tones are `sit` (with the SIT where the labels put
/// it, and the announcement after it counted as speech); a recorded carrier
/// announcement and a person's "Allo" are speech, not tones.
#[test]
fn early_media_analyser_on_corpus_clips() {
    use cap4::amd::{AmdConfig, EarlyKind, early};
    let dir = fixtures().join("synthetic");
    let labels = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    let mut sits = 0;
    for line in labels.lines().skip(1) {
        let file = line.split(',').next().unwrap();
        let Some(at) = line.split(";sit=").nth(1).map(|s| s.split(';').next().unwrap()) else { continue };
        let at_ms = (at.parse::<f64>().unwrap() * 1000.0) as i64;
        let r = early::analyse(&AmdConfig::default(), &decode_flac(&dir.join(file))).unwrap();
        assert_eq!(r.kind, EarlyKind::Sit, "{file}: {r:?}");
        let sit = r.sit.unwrap();
        assert!((sit.start_ms as i64 - at_ms).abs() <= 60, "{file}: SIT at {at_ms} ms, got {sit:?}");
        assert!(r.speech_ms >= 1000, "{file}: {r:?}");
        sits += 1;
    }
    assert_eq!(sits, 7);
    let r = early::analyse(&AmdConfig::default(), &decode_flac(&fixtures().join("real/real_0008.flac"))).unwrap();
    assert_eq!((r.kind, r.sit), (EarlyKind::Announcement, None), "{r:?}");
    assert!(r.speech_ms >= 4000 && r.tone_ms < 200, "{r:?}");
    // "Allo" (0.356–0.796 s): 440 ms of speech, under the announcement minimum.
    let r = early::analyse(&AmdConfig::default(), &decode_flac(&fixtures().join("real/real_0012.flac"))).unwrap();
    assert_eq!(r.sit, None, "{r:?}");
    assert!((250..=500).contains(&r.speech_ms) && r.tone_ms < 100, "{r:?}");
    assert!((300..=420).contains(&r.first_speech_ms.unwrap()), "{r:?}");
}

/// The benchmark's augmentation (`examples/amd_corpus/augment.rs`), the same
/// copies the figures in docs/amd.md come from.
#[allow(dead_code)]
#[path = "../../examples/amd_corpus/augment.rs"]
mod augment;

/// Issue 17's first rule, on every clip of both corpora: music in the room at
/// 10 dB under the voice does not hang up on the people (human recall floor
/// 95 %; 98.8 % synthetic and 97.8 % real measured, 69 % and 87 % before),
/// and the music alone, with nobody
/// speaking, is never `machine` (it was 40–58 % before the speech rule).
#[test]
fn music_in_the_room_does_not_hang_up() {
    let config = cap4::amd::AmdConfig::default();
    let music = augment::Condition::Music { snr_db: 10.0 };
    let index = augment::CONDITIONS.iter().position(|c| *c == music).unwrap() as u64;
    for corpus in ["synthetic", "real"] {
        let dir = fixtures().join(corpus);
        let labels = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
        let (mut humans, mut humans_right, mut alone_machine, mut clips) = (0, 0, Vec::new(), 0);
        for line in labels.lines().skip(1) {
            let fields: Vec<&str> = line.splitn(3, ',').collect();
            let (file, label) = (fields[0], fields[1]);
            let number: u64 = file.trim_end_matches(".flac").rsplit('_').next().unwrap().parse().unwrap();
            let clean = decode_flac(&dir.join(file));
            // The benchmark's seed for this clip and condition.
            let copy = augment::apply(&clean, music, &[], number * 1000 + index);
            let verdict = cap4::amd::classify(&config, &copy).unwrap();
            if label == "human" {
                humans += 1;
                humans_right += usize::from(verdict.kind.as_str() == "human");
            }
            let alone: Vec<i16> =
                copy.iter().zip(&clean).map(|(&m, &s)| (i32::from(m) - i32::from(s)).clamp(-32768, 32767) as i16).collect();
            let verdict = cap4::amd::classify(&config, &alone).unwrap();
            if verdict.kind.as_str() == "machine" {
                alone_machine.push(format!("{file}: {verdict:?}"));
            }
            clips += 1;
        }
        assert!(clips >= 90, "{corpus}: {clips} clips");
        assert!(humans_right * 100 >= humans * 95, "{corpus}: human recall under music {humans_right}/{humans}");
        assert!(alone_machine.is_empty(), "{corpus}: music alone decided machine: {alone_machine:#?}");
    }
}
