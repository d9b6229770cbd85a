//! The answer classifier's accuracy benchmark: every clip of the two corpora in
//! `tests/fixtures/amd/` through `cap4::amd::classify` (the code `cap4 amd` and
//! a live call run), then accuracy, recall per class, unknown rate, confusion
//! matrix, the human verdict's delay after the person stopped talking, the
//! machine verdict's time from the answer, and processing speed.
//!
//! ```sh
//! cargo run --release --example amd_corpus                 # the defaults
//! cargo run --release --example amd_corpus -- -v           # and every miss
//! cargo run --release --example amd_corpus -- pause_short_ms=450 max_greeting_ms=2500
//! ```
//!
//! The defaults were tuned on `synthetic/` (TTS voices); `real/` (recorded
//! voices) is the hold-out and is reported separately.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cap4::amd::{Amd, AmdConfig, CALL_FRAME, Kind, Verdict, classify};

struct Clip {
    file: String,
    human: bool,
    speech_end_ms: f64,
    notes: String,
    samples: Vec<i16>,
}

fn main() {
    let mut verbose = false;
    let mut overrides = String::new();
    for arg in std::env::args().skip(1) {
        if arg == "-v" || arg == "--verbose" {
            verbose = true;
        } else if let Some((key, value)) = arg.split_once('=') {
            overrides.push_str(&format!("{key} = {value}\n"));
        } else {
            eprintln!("usage: amd_corpus [-v] [key=value ...]   (keys of [amd])");
            std::process::exit(64);
        }
    }
    let config: AmdConfig = toml::from_str(&overrides).unwrap_or_else(|e| {
        eprintln!("bad override: {e}");
        std::process::exit(64)
    });
    if let Err(e) = config.validate() {
        eprintln!("{e}");
        std::process::exit(78);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amd");
    let mut audio_s = 0.0;
    let mut busy_s = 0.0;
    for (name, dir) in [("synthetic (tuning set)", "synthetic"), ("real (hold-out)", "real")] {
        let clips = load(&root.join(dir));
        let results: Vec<Verdict> = clips.iter().map(|c| classify(&config, &c.samples).expect("validated config")).collect();
        report(name, &clips, &results, verbose);
        // Speed: the whole clip through the detector (it keeps running after the verdict).
        for clip in &clips {
            let started = Instant::now();
            let mut amd = Amd::new(&config).expect("validated config");
            for frame in clip.samples.chunks(CALL_FRAME) {
                std::hint::black_box(amd.push(frame));
            }
            busy_s += started.elapsed().as_secs_f64();
            audio_s += clip.samples.len() as f64 / 8000.0;
        }
    }
    println!(
        "speed: {:.0} s of audio in {:.3} s: {:.0}x real time, {:.3} % of one core per call",
        audio_s,
        busy_s,
        audio_s / busy_s,
        100.0 * busy_s / audio_s
    );
}

fn report(name: &str, clips: &[Clip], results: &[Verdict], verbose: bool) {
    let mut matrix = [[0usize; 3]; 2];
    let mut human_delay = Vec::new();
    let mut machine_time = Vec::new();
    let mut causes: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut misses = Vec::new();
    for (clip, v) in clips.iter().zip(results) {
        let row = usize::from(!clip.human);
        let col = match v.kind {
            Kind::Human => 0,
            Kind::Machine => 1,
            Kind::Unknown => 2,
        };
        matrix[row][col] += 1;
        *causes.entry((if clip.human { "human" } else { "machine" }, v.cause.as_str())).or_default() += 1;
        match (clip.human, v.kind) {
            (true, Kind::Human) => human_delay.push(f64::from(v.decided_at_ms) - clip.speech_end_ms),
            (false, Kind::Machine) => machine_time.push(f64::from(v.decided_at_ms)),
            _ => misses.push((clip, v)),
        }
    }
    let humans = matrix[0].iter().sum::<usize>();
    let machines = matrix[1].iter().sum::<usize>();
    let total = humans + machines;
    let pct = |n: usize, d: usize| if d == 0 { 0.0 } else { 100.0 * n as f64 / d as f64 };
    println!("== {name}: {total} clips ({humans} human, {machines} machine)");
    println!(
        "accuracy {:.1} %   human recall {:.1} %   machine recall {:.1} %   unknown {:.1} %",
        pct(matrix[0][0] + matrix[1][1], total),
        pct(matrix[0][0], humans),
        pct(matrix[1][1], machines),
        pct(matrix[0][2] + matrix[1][2], total)
    );
    println!("confusion (rows truth, columns verdict):   human  machine  unknown");
    for (label, row) in ["human", "machine"].iter().zip(matrix) {
        println!("  {label:<8}                                {:>5}  {:>7}  {:>7}", row[0], row[1], row[2]);
    }
    println!(
        "human verdict after the person stopped talking: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        percentile(&mut human_delay, 0.5),
        percentile(&mut human_delay, 0.9),
        percentile(&mut human_delay, 1.0)
    );
    println!(
        "machine verdict from the answer: p50 {:.0} ms, p90 {:.0} ms",
        percentile(&mut machine_time, 0.5),
        percentile(&mut machine_time, 0.9)
    );
    let causes: Vec<String> = causes.iter().map(|((truth, cause), n)| format!("{truth}/{cause} {n}")).collect();
    println!("causes: {}", causes.join(", "));
    if verbose {
        for (clip, v) in misses {
            let kind = clip.notes.split(';').next().unwrap_or("");
            println!(
                "  miss {} truth {} -> {} ({}) at {} ms, speech {:?}-{:?} total {} words {} beep {:?} | {} {}",
                clip.file,
                if clip.human { "human" } else { "machine" },
                v.kind.as_str(),
                v.cause.as_str(),
                v.decided_at_ms,
                v.speech_start_ms,
                v.speech_end_ms,
                v.speech_total_ms,
                v.words,
                v.beep_start_ms,
                kind,
                clip.notes.rsplit(";text=").next().unwrap_or("")
            );
        }
    }
    println!();
}

/// Nearest-rank percentile (NaN when empty).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn load(dir: &Path) -> Vec<Clip> {
    let labels = std::fs::read_to_string(dir.join("labels.csv")).expect("labels.csv");
    let mut rows = labels.lines().map(split_csv);
    let header = rows.next().expect("header");
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (file, label, end, notes) = (col("file"), col("label"), col("speech_end_s"), col("notes"));
    rows.filter(|r| r.len() == header.len())
        .map(|r| Clip {
            samples: decode_flac(&dir.join(&r[file])),
            file: r[file].clone(),
            human: r[label] == "human",
            speech_end_ms: r[end].parse::<f64>().expect("speech_end_s") * 1000.0,
            notes: r[notes].clone(),
        })
        .collect()
}

/// One CSV line (RFC 4180 quoting; no newlines inside fields in these files).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            _ => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// An 8 kHz mono 16-bit FLAC file (the corpora's format).
fn decode_flac(path: &PathBuf) -> Vec<i16> {
    let mut reader = claxon::FlacReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let info = reader.streaminfo();
    assert_eq!((info.sample_rate, info.channels, info.bits_per_sample), (8000, 1, 16), "{}", path.display());
    reader.samples().map(|s| s.map(|v| v as i16).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).collect()
}
