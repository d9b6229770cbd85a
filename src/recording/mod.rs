//! Call recording, opt-in (`[recording] enabled`): one stereo WAV per
//! answered call, left the caller, right what the box played, 16-bit at the
//! engine's rate, from the answer to the end.
//!
//! Owns `[recording]` ([`RecordingConfig`]), the file's name for a call, the
//! retention (oldest files removed first once `max_files` or `max_mb` is
//! reached), and the [`Recorder`] a media session feeds: the session (async
//! side) mixes each captured frame with what was played (`stereo.rs`) and
//! hands batches to a writer thread, which appends them to a
//! [`growing_wav::GrowingWav`] and syncs it every second.
//!
//! Promises: nothing here runs on the real-time thread; the session never
//! waits for the disk (a full queue drops a batch and counts it); the file
//! plays up to its last second after a crash or power cut; only the owner
//! can read it.

pub mod growing_wav;
pub mod stereo;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::section::SectionError;

/// `[recording]` as written in the TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    pub enabled: bool,
    /// Default: `<storage.dir>/recordings` (set by the config loader).
    pub dir: Option<PathBuf>,
    /// Most recordings kept; the oldest are removed first.
    pub max_files: u32,
    /// Most megabytes (MiB) of recordings kept.
    pub max_mb: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig { enabled: false, dir: None, max_files: 1_000, max_mb: 2_048 }
    }
}

impl RecordingConfig {
    pub fn validate(&self) -> Result<(), SectionError> {
        if !(1..=1_000_000).contains(&self.max_files) {
            return Err(SectionError::new("recording", "max_files", "must be 1 to 1000000"));
        }
        if !(1..=10_000_000).contains(&self.max_mb) {
            return Err(SectionError::new("recording", "max_mb", "must be 1 to 10000000"));
        }
        Ok(())
    }

    /// The folder, once the loader has set it.
    pub fn folder(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// What the call record says about its recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRecord {
    /// The file's name in the recordings folder.
    pub file: String,
    pub duration_ms: u64,
    /// Batches the writer could not keep up with (each up to 200 ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_batches: u64,
    /// Why the file stops before the call's end (the disk refused a write);
    /// it plays up to its last good second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a recording could not be made (the call goes on regardless).
#[derive(Debug)]
pub enum RecordingError {
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    Write(std::io::Error),
    /// The writer thread panicked.
    Lost,
}

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create { path, source } => write!(f, "cannot create {}: {source}", path.display()),
            Self::Write(e) => write!(f, "cannot write the recording: {e}"),
            Self::Lost => write!(f, "the recording's writer stopped"),
        }
    }
}

impl std::error::Error for RecordingError {}

/// A character a recording's name may have.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The recording's file name for a call id (only `[A-Za-z0-9_-]` kept).
pub fn file_name(call_id: &str) -> String {
    let safe: String = call_id.chars().filter(|&c| name_char(c)).collect();
    format!("{safe}.wav")
}

/// The path of a record's recording file, if `file` is a name this module
/// gives (never a path that leaves the folder).
pub fn path_of(dir: &Path, file: &str) -> Option<PathBuf> {
    let stem = file.strip_suffix(".wav")?;
    let ok = !stem.is_empty() && stem.chars().all(name_char);
    ok.then(|| dir.join(file))
}

/// What the writer thread wrote: the file's length, and why it stops
/// early if it does.
struct Written {
    duration_ms: u64,
    error: Option<String>,
}

/// Audio per batch handed to the writer.
const BATCH_MS: usize = 200;
/// Batches waiting for the writer before new ones are dropped (4 s).
const QUEUE_BATCHES: usize = 20;
/// The file is synced (header and data) after this much audio.
const SYNC_EVERY_MS: u64 = 1_000;

/// A call's recording being made: fed by the media session, written by its thread.
pub struct Recorder {
    mix: stereo::StereoMix,
    batch: Vec<i16>,
    frame: Vec<i16>,
    batch_samples: usize,
    tx: Option<mpsc::SyncSender<Vec<i16>>>,
    thread: Option<std::thread::JoinHandle<Result<Written, RecordingError>>>,
    file: String,
    dropped: u64,
}

impl Recorder {
    /// Starts the writer thread for `call_id` at `rate` in `cfg`'s folder
    /// (made if missing), after removing the oldest recordings over the limits.
    pub fn start(cfg: &RecordingConfig, call_id: &str, rate: u32) -> Option<Recorder> {
        let dir = cfg.folder()?.to_path_buf();
        let file = file_name(call_id);
        let path = dir.join(&file);
        let (tx, rx) = mpsc::sync_channel::<Vec<i16>>(QUEUE_BATCHES);
        let limits = (cfg.max_files, cfg.max_mb);
        let thread = std::thread::Builder::new()
            .name("cap4-recording".into())
            .spawn(move || write_recording(&dir, &path, rate, limits, rx))
            .map_err(|err| warn!(%err, "recording thread not started"))
            .ok()?;
        let batch_samples = rate as usize * BATCH_MS / 1000 * 2;
        Some(Recorder {
            mix: stereo::StereoMix::new(rate),
            batch: Vec::with_capacity(batch_samples),
            frame: Vec::new(),
            batch_samples,
            tx: Some(tx),
            thread: Some(thread),
            file,
            dropped: 0,
        })
    }

    /// Samples handed to the engine for playback.
    pub fn played(&mut self, samples: &[i16]) {
        self.mix.played(samples);
    }

    /// Playback flushed (barge-in): that audio was never heard.
    pub fn flushed(&mut self) {
        self.mix.flushed();
    }

    /// One captured frame of the caller.
    pub fn captured(&mut self, frame: &[i16]) {
        self.mix.captured(frame, &mut self.frame);
        self.batch.extend_from_slice(&self.frame);
        if self.batch.len() >= self.batch_samples {
            self.send_batch();
        }
    }

    fn send_batch(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_samples));
        if let Some(tx) = self.tx.as_ref() {
            if tx.try_send(batch).is_err() {
                self.dropped += 1;
            }
        }
    }

    /// Ends the recording (blocks until the file is synced: call it off the
    /// async workers).
    pub fn finish(mut self) -> Result<RecordingRecord, RecordingError> {
        if !self.batch.is_empty() {
            self.send_batch();
        }
        self.tx = None;
        let Written { duration_ms, error } = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result?,
            _ => return Err(RecordingError::Lost),
        };
        Ok(RecordingRecord { file: std::mem::take(&mut self.file), duration_ms, dropped_batches: self.dropped, error })
    }
}

/// The writer thread: retention, the file, every batch, a sync each second.
/// A write the disk refuses ends the file there (it stays a valid WAV up to
/// its last sync): its duration and the error, not a lost recording.
fn write_recording(
    dir: &Path,
    path: &Path,
    rate: u32,
    (max_files, max_mb): (u32, u64),
    batches: mpsc::Receiver<Vec<i16>>,
) -> Result<Written, RecordingError> {
    use std::os::unix::fs::DirBuilderExt;
    let create = |source| RecordingError::Create { path: path.to_path_buf(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(create)?;
    prune(dir, max_files.saturating_sub(1) as usize, max_mb.saturating_mul(1024 * 1024));
    let mut wav = growing_wav::GrowingWav::create(path, 2, rate).map_err(create)?;
    // The new name must survive a power cut too.
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    let mut synced_ms = 0;
    let mut failed = None;
    for batch in batches {
        if failed.is_some() {
            continue; // drain, so the session never blocks
        }
        if let Err(err) = wav.append(&batch) {
            failed = Some(err);
            continue;
        }
        if wav.duration_ms() >= synced_ms + SYNC_EVERY_MS {
            match wav.sync() {
                Ok(()) => synced_ms = wav.duration_ms(),
                Err(err) => failed = Some(err),
            }
        }
    }
    if failed.is_none() {
        if let Err(err) = wav.sync() {
            failed = Some(err);
        }
    }
    match failed {
        Some(err) => {
            warn!(file = %path.display(), synced_ms, %err, "call recording cut short");
            Ok(Written { duration_ms: synced_ms, error: Some(RecordingError::Write(err).to_string()) })
        }
        None => {
            info!(file = %path.display(), duration_ms = wav.duration_ms(), "call recorded");
            Ok(Written { duration_ms: wav.duration_ms(), error: None })
        }
    }
}

/// Removes the oldest `.wav` files of `dir` until at most `keep` remain and
/// they take at most `max_bytes`.
fn prune(dir: &Path, keep: usize, max_bytes: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            let meta = e.metadata().ok()?;
            let wav = meta.is_file() && path.extension().is_some_and(|x| x == "wav");
            wav.then_some(())?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    let mut count = files.len();
    for (_, len, path) in files {
        if count <= keep && total <= max_bytes {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => info!(file = %path.display(), "old recording removed (retention)"),
            Err(err) => warn!(file = %path.display(), %err, "old recording not removed"),
        }
        count -= 1;
        total = total.saturating_sub(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cap4-rec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_recording_is_one_stereo_file_as_long_as_the_capture() {
        let dir = temp("one");
        let cfg = RecordingConfig { enabled: true, dir: Some(dir.clone()), ..RecordingConfig::default() };
        let mut rec = Recorder::start(&cfg, "call/../1", 8000).expect("started");
        rec.played(&[500; 800]);
        for _ in 0..150 {
            rec.captured(&[-300; 160]);
        }
        let done = rec.finish().unwrap();
        assert_eq!(done, RecordingRecord { file: "call1.wav".into(), duration_ms: 3_000, dropped_batches: 0, error: None });
        let path = path_of(&dir, &done.file).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 44 + 3 * 8000 * 4);
        assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2);
        let frame = |i: usize| {
            (i16::from_le_bytes([bytes[44 + i * 4], bytes[45 + i * 4]]), i16::from_le_bytes([bytes[46 + i * 4], bytes[47 + i * 4]]))
        };
        assert_eq!(frame(0), (-300, 500));
        assert_eq!(frame(799), (-300, 500));
        assert_eq!(frame(800), (-300, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_oldest_recordings_go_first_past_either_limit() {
        let dir = temp("prune");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5 {
            std::fs::write(dir.join(format!("c{i}.wav")), vec![0u8; 1000]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        std::fs::write(dir.join("notes.txt"), b"kept").unwrap();
        prune(&dir, 3, u64::MAX);
        let mut left: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["c2.wav", "c3.wav", "c4.wav", "notes.txt"]);
        prune(&dir, 10, 1500);
        assert!(dir.join("c4.wav").exists() && !dir.join("c3.wav").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_names_this_module_gives_are_paths() {
        let dir = Path::new("/var/lib/cap4/recordings");
        assert_eq!(path_of(dir, "abc-1.wav"), Some(dir.join("abc-1.wav")));
        for bad in ["../x.wav", "a/b.wav", ".wav", "x.mp3", "x"] {
            assert_eq!(path_of(dir, bad), None, "{bad}");
        }
        assert!(RecordingConfig { max_files: 0, ..RecordingConfig::default() }.validate().is_err());
    }
}
