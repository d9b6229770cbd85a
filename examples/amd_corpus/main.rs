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
//! cargo run --release --example amd_corpus -- --write DIR  # the augmented copies as WAV
//! ```
//!
//! Each corpus is split in two fixed halves by clip number: odd numbers are
//! the tuning half (look at it, tune on it), even numbers the held-out half
//! (judge on it, never tune on it; the clips are in random order, so parity
//! is a random split). Every figure is printed for both halves, clean and
//! under each augmented condition (`augment.rs`: music, babble, noise, TV,
//! level changes, a second codec hop), so over-tuning shows as a gap.

mod augment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cap4::amd::{Amd, AmdConfig, CALL_FRAME, Kind, Verdict, classify};

struct Clip {
    file: String,
    /// The number in the file name (`clip_0042.flac`: 42): odd tunes, even judges.
    number: u32,
    human: bool,
    speech_start_ms: f64,
    speech_end_ms: f64,
    notes: String,
    samples: Vec<i16>,
}

impl Clip {
    /// The labelled speech of the clip (from its start to its end).
    fn speech(&self) -> &[i16] {
        let at = |ms: f64| ((ms * 8.0) as usize).min(self.samples.len());
        &self.samples[at(self.speech_start_ms)..at(self.speech_end_ms).max(at(self.speech_start_ms))]
    }
}

fn main() {
    let mut verbose = false;
    let mut overrides = String::new();
    let mut write_to: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-v" || arg == "--verbose" {
            verbose = true;
        } else if arg == "--write" {
            write_to = args.next().map(PathBuf::from);
        } else if let Some((key, value)) = arg.split_once('=') {
            overrides.push_str(&format!("{key} = {value}\n"));
        } else {
            eprintln!("usage: amd_corpus [-v] [--write DIR] [key=value ...]   (keys of [amd])");
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
    let mut table = Vec::new();
    let mut alone_table = Vec::new();
    for (name, dir) in [("synthetic", "synthetic"), ("real", "real")] {
        let clips = load(&root.join(dir));
        for (half, keep) in [("tuning half", 1), ("held-out half", 0)] {
            let part: Vec<&Clip> = clips.iter().filter(|c| c.number % 2 == keep).collect();
            let results: Vec<Verdict> = part.iter().map(|c| classify(&config, &c.samples).expect("validated config")).collect();
            report(&format!("{name}, {half}, clean"), &part, &results, verbose);
        }
        // Babble and TV are made of voices: each clip's speech only, not the
        // SIT before it or the beep after it.
        let voices: Vec<&[i16]> = clips.iter().map(Clip::speech).collect();
        for condition in augment::CONDITIONS {
            let mut row = format!("{name:<9} {:<14}", condition.name());
            let mut alone_row = row.clone();
            for keep in [1, 0] {
                let part: Vec<&Clip> = clips.iter().filter(|c| c.number % 2 == keep).collect();
                let copies: Vec<Vec<i16>> = part
                    .iter()
                    .map(|c| {
                        let others: Vec<&[i16]> =
                            clips.iter().zip(&voices).filter(|(o, _)| o.number != c.number).map(|(_, v)| *v).collect();
                        augment::apply(&c.samples, condition, &others, u64::from(c.number) * 1000 + condition_index(condition))
                    })
                    .collect();
                if let Some(dir) = &write_to {
                    write_copies(dir, name, condition, &part, &copies);
                }
                let results: Vec<Verdict> = copies.iter().map(|x| classify(&config, x).expect("validated config")).collect();
                row.push_str(&format!(" | {}", Figures::of(&part, &results).cells()));
                if condition.is_background() {
                    // The background alone, at the level it has under this clip:
                    // no one speaks, so no verdict may be `machine`.
                    let alone: Vec<Vec<i16>> = part
                        .iter()
                        .zip(&copies)
                        .map(|(c, x)| {
                            x.iter().zip(&c.samples).map(|(&m, &s)| (i32::from(m) - i32::from(s)).clamp(-32768, 32767) as i16).collect()
                        })
                        .collect();
                    let verdicts: Vec<Verdict> = alone.iter().map(|x| classify(&config, x).expect("validated config")).collect();
                    let kinds: Vec<Kind> = verdicts.iter().map(|v| v.kind).collect();
                    let share = |k: Kind| 100.0 * kinds.iter().filter(|&&v| v == k).count() as f64 / kinds.len().max(1) as f64;
                    alone_row.push_str(&format!(
                        " | machine {:5.1} %  human {:5.1} %  unknown {:5.1} %",
                        share(Kind::Machine),
                        share(Kind::Human),
                        share(Kind::Unknown)
                    ));
                    if verbose {
                        let mut causes: BTreeMap<String, usize> = BTreeMap::new();
                        for v in verdicts.iter().filter(|v| v.kind == Kind::Machine) {
                            *causes.entry(format!("{}@{}", v.cause.as_str(), v.decided_at_ms / 500 * 500)).or_default() += 1;
                        }
                        let list: Vec<String> = causes.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                        alone_row.push_str(&format!("\n      machine: {}", list.join(", ")));
                    }
                }
                if verbose {
                    let mut missed: BTreeMap<String, usize> = BTreeMap::new();
                    for (clip, v) in part.iter().zip(&results) {
                        if clip.human != (v.kind == Kind::Human) {
                            let truth = if clip.human { "human" } else { "machine" };
                            *missed
                                .entry(format!("{truth}->{}({})@{}", v.kind.as_str(), v.cause.as_str(), v.decided_at_ms / 500 * 500))
                                .or_default() += 1;
                        }
                    }
                    if !missed.is_empty() {
                        let list: Vec<String> = missed.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                        row.push_str(&format!("\n      misses: {}", list.join(", ")));
                    }
                }
            }
            table.push(row);
            if condition.is_background() {
                alone_table.push(alone_row);
            }
        }
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
        "== every condition, tuning half | held-out half (each: accuracy, human recall, machine recall, human verdict after speech p50/p90, machine verdict p50)"
    );
    for row in table {
        println!("{row}");
    }
    println!();
    println!("== the background alone, no one speaking (tuning half | held-out half): a `machine` here hangs up on a silent person");
    for row in alone_table {
        println!("{row}");
    }
    println!();
    println!(
        "speed: {:.0} s of audio in {:.3} s: {:.0}x real time, {:.3} % of one core per call",
        audio_s,
        busy_s,
        audio_s / busy_s,
        100.0 * busy_s / audio_s
    );
}

fn condition_index(condition: augment::Condition) -> u64 {
    augment::CONDITIONS.iter().position(|c| *c == condition).unwrap_or(0) as u64
}

/// The figures of one set of verdicts, for the condition table.
struct Figures {
    accuracy: f64,
    human_recall: f64,
    machine_recall: f64,
    human_p50: f64,
    human_p90: f64,
    machine_p50: f64,
}

impl Figures {
    fn of(clips: &[&Clip], results: &[Verdict]) -> Figures {
        let (mut right, mut humans, mut humans_right, mut machines, mut machines_right) = (0, 0, 0, 0, 0);
        let (mut human_delay, mut machine_time) = (Vec::new(), Vec::new());
        for (clip, v) in clips.iter().zip(results) {
            if clip.human {
                humans += 1;
                if v.kind == Kind::Human {
                    humans_right += 1;
                    right += 1;
                    human_delay.push(f64::from(v.decided_at_ms) - clip.speech_end_ms);
                }
            } else {
                machines += 1;
                if v.kind == Kind::Machine {
                    machines_right += 1;
                    right += 1;
                    machine_time.push(f64::from(v.decided_at_ms));
                }
            }
        }
        let pct = |n: usize, d: usize| if d == 0 { f64::NAN } else { 100.0 * n as f64 / d as f64 };
        Figures {
            accuracy: pct(right, humans + machines),
            human_recall: pct(humans_right, humans),
            machine_recall: pct(machines_right, machines),
            human_p50: percentile(&mut human_delay, 0.5),
            human_p90: percentile(&mut human_delay, 0.9),
            machine_p50: percentile(&mut machine_time, 0.5),
        }
    }

    fn cells(&self) -> String {
        format!(
            "{:5.1} % {:5.1} % {:5.1} %  {:4.0}/{:4.0} ms {:4.2} s",
            self.accuracy,
            self.human_recall,
            self.machine_recall,
            self.human_p50,
            self.human_p90,
            self.machine_p50 / 1000.0
        )
    }
}

/// The copies as 8 kHz mono WAV files, `DIR/<corpus>/<condition>/<clip>.wav`.
fn write_copies(dir: &Path, corpus: &str, condition: augment::Condition, clips: &[&Clip], copies: &[Vec<i16>]) {
    let folder = dir.join(corpus).join(condition.name().replace([' ', '+'], "_"));
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    for (clip, samples) in clips.iter().zip(copies) {
        let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
        let data_len = (samples.len() * 2) as u32;
        bytes.extend_from_slice(b"RIFF");
        bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
        bytes.extend_from_slice(b"WAVEfmt ");
        for field in [16u32.to_le_bytes(), [1, 0, 1, 0], 8000u32.to_le_bytes(), 16000u32.to_le_bytes(), [2, 0, 16, 0]] {
            bytes.extend_from_slice(&field);
        }
        bytes.extend_from_slice(b"data");
        bytes.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        let path = folder.join(clip.file.replace(".flac", ".wav"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn report(name: &str, clips: &[&Clip], results: &[Verdict], verbose: bool) {
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
    let (file, label, start, end, notes) = (col("file"), col("label"), col("speech_start_s"), col("speech_end_s"), col("notes"));
    rows.filter(|r| r.len() == header.len())
        .map(|r| Clip {
            samples: decode_flac(&dir.join(&r[file])),
            number: r[file].trim_end_matches(".flac").rsplit('_').next().and_then(|n| n.parse().ok()).expect("clip_NNNN.flac"),
            file: r[file].clone(),
            human: r[label] == "human",
            speech_start_ms: r[start].parse::<f64>().expect("speech_start_s") * 1000.0,
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
