//! Call history: an append-only journal of call records (`calls.jsonl`, one JSON
//! record per line) plus the in-memory index the API reads.
//!
//! Promises:
//! * [`Store::put`] returns only after the line is written and `fdatasync`ed, so a
//!   `kill -9` or power cut loses nothing already reported;
//! * on open, a torn last line (a write cut short) is skipped with a warning, every
//!   complete record is kept, and the newest line for an id wins;
//! * a call that was still active when the previous run stopped is recorded as
//!   `failed` (nobody can tell how it ended);
//! * the journal is compacted at open (written to a temporary file, synced, then
//!   renamed over the old one), so it holds one line per call afterwards; lines
//!   that could not be read are kept in `calls.rejected`, never silently dropped;
//!   when the disk refuses that (full, read-only), the store opens on the
//!   journal as it is, unsynced, rather than keeping the daemon from starting;
//! * one process at a time: the store holds an exclusive lock (`calls.lock`), so a
//!   second daemon on the same directory fails instead of compacting the journal
//!   under the first one;
//! * an append that fails half-way is cut back, so the next record starts on a
//!   clean line;
//! * a failed append (a full disk, a card gone read-only) loses nothing: the
//!   record is kept in memory (the API shows it), the store reports itself
//!   unsynced ([`Store::unsynced`]), and the first append that works again
//!   carries every state missed with it;
//! * room for a call's end on a full disk: the store keeps a reserve file
//!   (`calls.reserve`, [`RESERVE_BYTES`] written, not sparse); when an update
//!   of a call's end meets a full disk, the reserve is given up and the end
//!   written into its room, so a call that ends while the disk is full is on
//!   disk, even if the daemon stops before space returns (only an end spends
//!   it: a live call's transcript saves would use it up before the end
//!   comes, and a refused dial never was on disk). A new call
//!   needs the reserve in place (restored first if it was spent): a dial on a
//!   disk that has no room for its call's end is refused as disk full;
//! * bounded: past [`MAX_RECORDS`] calls the oldest ended ones go (down to
//!   90 % of it), and once the appended lines pass [`COMPACT_AFTER_BYTES`]
//!   beyond the last compaction (a long call saves its transcript every
//!   10 s), the journal is compacted the same way as at open: only between
//!   calls, never on a live call's path.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::call::record::{CallRecord, Outcome, Status, TimelineEntry};
use crate::clock::rfc3339;

const JOURNAL: &str = "calls.jsonl";
/// The most calls kept (years of a box's calls; each call's record, its
/// transcript included, is held in memory).
pub const MAX_RECORDS: usize = 10_000;
/// Appended bytes since the last compaction that trigger another one.
pub const COMPACT_AFTER_BYTES: u64 = 8 << 20;
const REJECTED: &str = "calls.rejected";
const RESERVE: &str = "calls.reserve";
/// Room kept for the ends of calls on a full disk: a long call's record,
/// transcript and all, is tens of kilobytes.
pub const RESERVE_BYTES: u64 = 256 << 10;
const LOCK: &str = "calls.lock";

#[derive(Debug)]
pub enum StoreError {
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// Another process holds the store.
    Locked {
        path: PathBuf,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, op, source } => write!(f, "{op} {}: {source}", path.display()),
            Self::Locked { path } => write!(f, "{} is locked by another cap4 process", path.display()),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// The disk (or the quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
    }
}

/// What opening the journal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub records: usize,
    /// Lines that were not a complete record (1-based line numbers).
    pub skipped_lines: Vec<usize>,
    /// Calls that were active when the previous run stopped, now ended `failed`.
    pub interrupted: Vec<String>,
}

/// How much the journal may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_records: usize,
    pub compact_after_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_records: MAX_RECORDS, compact_after_bytes: COMPACT_AFTER_BYTES }
    }
}

/// The `before` cursor of a list request names no call.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownCursor;

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: File,
    /// Length of the journal up to its last complete line.
    good_len: u64,
    /// Its length right after the last compaction.
    compacted_len: u64,
    limits: Limits,
    /// Why the last append failed, while records are newer in memory than on disk.
    unsynced: Option<String>,
    /// The calls whose newest state is not on disk.
    unsynced_ids: std::collections::BTreeSet<String>,
    /// `calls.reserve`, and whether it is in place.
    reserve: PathBuf,
    reserve_held: bool,
    /// Calls whose every state so far was refused (a dial on a full disk):
    /// never on disk, so their end has no claim on the reserve.
    never_written: std::collections::BTreeSet<String>,
    _lock: nix::fcntl::Flock<File>,
    records: Vec<CallRecord>,
    index: HashMap<String, usize>,
}

impl Store {
    /// Opens (creating if needed) the journal in `dir`. `now_unix_ms` stamps calls
    /// found interrupted.
    pub fn open(dir: &Path, now_unix_ms: i64) -> Result<(Self, OpenReport), StoreError> {
        Self::open_with(dir, now_unix_ms, Limits::default())
    }

    /// [`Store::open`] with other limits (tests).
    pub fn open_with(dir: &Path, now_unix_ms: i64, limits: Limits) -> Result<(Self, OpenReport), StoreError> {
        let io_err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, op, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let lock_path = dir.join(LOCK);
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| StoreError::Locked { path: dir.to_path_buf() })?;
        let path = dir.join(JOURNAL);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut report = OpenReport::default();
        let mut rejected: Vec<u8> = Vec::new();
        let mut records: Vec<CallRecord> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<CallRecord>(line) {
                Ok(record) => match index.get(&record.id) {
                    Some(&i) => records[i] = record,
                    None => {
                        index.insert(record.id.clone(), records.len());
                        records.push(record);
                    }
                },
                Err(_) => {
                    report.skipped_lines.push(n + 1);
                    rejected.extend_from_slice(line);
                    rejected.push(b'\n');
                }
            }
        }
        for record in records.iter_mut().filter(|r| r.is_active()) {
            let last_at = record.timeline.last().map_or(0, |e| e.at_ms);
            record.timeline.push(TimelineEntry { at_ms: last_at, event: "cap4_restarted".into(), detail: None });
            record.status = Status::Ended;
            record.outcome = Some(Outcome::Failed);
            record.reason = Some("cap4 stopped during the call".into());
            record.ended_at = Some(rfc3339(now_unix_ms));
            report.interrupted.push(record.id.clone());
        }
        retain(&mut records, limits.max_records);
        let index = records.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        report.records = records.len();

        let saved_rejected = if rejected.is_empty() {
            Ok(())
        } else {
            let rejected_path = dir.join(REJECTED);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&rejected_path)
                .and_then(|mut out| out.write_all(&rejected).and_then(|()| out.sync_all()))
                .map_err(io_err("write", &rejected_path))
        };
        let (file, good_len, unsynced) = match saved_rejected.and_then(|()| compact(&path, &records)) {
            Ok((file, len)) => (file, len, None),
            Err(err) => {
                // A full disk or a read-only card must not keep the daemon
                // from starting: run on the journal as it is (everything on
                // it stays), with what changed at open in memory until a
                // write works again.
                tracing::warn!(%err, "call journal: cannot compact at start; running on it as it is");
                let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err("open", &path))?;
                // A torn last line would swallow the next record: cut it (it
                // is an incomplete write, and cutting needs no space).
                let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) as u64;
                if whole < bytes.len() as u64 {
                    file.set_len(whole).map_err(io_err("truncate", &path))?;
                }
                (file, whole, Some(err.to_string()))
            }
        };
        let unsynced_ids = if unsynced.is_some() { report.interrupted.iter().cloned().collect() } else { Default::default() };
        let reserve = dir.join(RESERVE);
        let reserve_held = match hold_reserve(&reserve) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "call journal: no room for the reserve; dials are refused until there is");
                false
            }
        };
        let store = Self {
            path,
            file,
            good_len,
            compacted_len: good_len,
            limits,
            unsynced,
            unsynced_ids,
            reserve,
            reserve_held,
            never_written: Default::default(),
            _lock: lock,
            records,
            index,
        };
        Ok((store, report))
    }

    /// Records the current state of a call durably, then in memory. On `Err`
    /// the record is in memory only, until a later `put` succeeds.
    pub fn put(&mut self, record: &CallRecord) -> Result<(), StoreError> {
        let mut lines = Vec::new();
        append_line(&mut lines, record);
        // States the disk missed go with this one (small appends, never a
        // rewrite on a disk that has only just found room again).
        for id in self.unsynced_ids.iter().filter(|id| **id != record.id) {
            if let Some(&i) = self.index.get(id) {
                append_line(&mut lines, &self.records[i]);
            }
        }
        let known = self.index.contains_key(&record.id);
        if !known && !self.reserve_held {
            // A new call needs room for its end: the reserve back first.
            if let Err(source) = hold_reserve(&self.reserve) {
                let err = StoreError::Io { path: self.reserve.clone(), op: "keep room for the call's end in", source };
                return Err(self.not_saved(record, known, err));
            }
            self.reserve_held = true;
            tracing::info!("call journal: the reserve is back in place");
        }
        let mut appended = self.append(&lines);
        // The end of a call that is on disk may use the reserve (not a live
        // call's transcript save, which would spend the room before the end
        // comes; not a refused dial, which never was on disk).
        let placed_end = known && !record.is_active() && !self.never_written.contains(&record.id);
        if placed_end && self.reserve_held && appended.as_ref().is_err_and(is_full) {
            let _ = self.file.set_len(self.good_len);
            match std::fs::remove_file(&self.reserve) {
                Ok(()) => {
                    self.reserve_held = false;
                    tracing::warn!(call_id = %record.id, "call journal: disk full; the reserve made room for this call's end, and dials are refused until space returns");
                    appended = self.append(&lines);
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => self.reserve_held = false,
                Err(_) => {}
            }
        }
        if let Err(source) = appended {
            // Cut a half-written line back off, so the next record is whole.
            let _ = self.file.set_len(self.good_len);
            let err = StoreError::Io { path: self.path.clone(), op: "append to", source };
            return Err(self.not_saved(record, known, err));
        }
        self.remember(record);
        self.good_len += lines.len() as u64;
        // Every state the disk missed went with this line.
        self.never_written.clear();
        if self.unsynced.take().is_some() {
            tracing::info!(records = self.unsynced_ids.len() + 1, "call journal: writable again; every state missed is on disk now");
            self.unsynced_ids.clear();
        }
        // Compaction rewrites the whole journal: only between calls, never on
        // a live call's path (a dial, a transcript save).
        if !record.is_active() && !self.records.iter().any(CallRecord::is_active) {
            let over = self.records.len() > self.limits.max_records;
            if over || self.good_len - self.compacted_len > self.limits.compact_after_bytes {
                if let Err(err) = self.compact_now() {
                    tracing::warn!(%err, "call journal: compaction failed; the journal keeps growing until it succeeds");
                }
            }
        }
        Ok(())
    }

    /// A state the disk refused: in memory only, carried by the next append
    /// that works.
    fn not_saved(&mut self, record: &CallRecord, known: bool, err: StoreError) -> StoreError {
        self.remember(record);
        if !known {
            self.never_written.insert(record.id.clone());
        }
        self.unsynced = Some(err.to_string());
        self.unsynced_ids.insert(record.id.clone());
        err
    }

    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        self.file.write_all(lines).and_then(|()| self.file.sync_data())
    }

    /// Drops the oldest ended calls past the limit (down to 90 % of it, so
    /// the next calls do not compact again at once) and rewrites the journal.
    fn compact_now(&mut self) -> Result<(), StoreError> {
        if self.records.len() > self.limits.max_records {
            retain(&mut self.records, self.limits.max_records - self.limits.max_records / 10);
            self.index = self.records.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        }
        let (file, len) = compact(&self.path, &self.records)?;
        self.file = file;
        self.good_len = len;
        self.compacted_len = len;
        Ok(())
    }

    fn remember(&mut self, record: &CallRecord) {
        match self.index.get(&record.id) {
            Some(&i) => self.records[i] = record.clone(),
            None => {
                self.index.insert(record.id.clone(), self.records.len());
                self.records.push(record.clone());
            }
        }
    }

    /// Why records are newer in memory than on disk, if they are.
    pub fn unsynced(&self) -> Option<&str> {
        self.unsynced.as_deref()
    }

    /// Bytes in the journal now.
    pub fn journal_bytes(&self) -> u64 {
        self.good_len
    }

    pub fn get(&self, id: &str) -> Option<&CallRecord> {
        self.index.get(id).map(|&i| &self.records[i])
    }

    /// Up to `limit` calls, newest first, started before the call `before` if given.
    pub fn list(&self, limit: usize, before: Option<&str>) -> Result<Vec<CallRecord>, UnknownCursor> {
        let end = match before {
            Some(id) => *self.index.get(id).ok_or(UnknownCursor)?,
            None => self.records.len(),
        };
        Ok(self.records[..end].iter().rev().take(limit).cloned().collect())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn is_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Makes `path` [`RESERVE_BYTES`] of written (not sparse) blocks, synced;
/// on failure removes what it wrote, so a failed try takes no room.
fn hold_reserve(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == RESERVE_BYTES) {
        return Ok(());
    }
    let written = File::create(path).and_then(|mut file| {
        let zeros = vec![0u8; 64 << 10];
        for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
            file.write_all(&zeros)?;
        }
        file.sync_all()
    });
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Keeps the newest `max` records (an active call is never dropped).
fn retain(records: &mut Vec<CallRecord>, max: usize) {
    let mut excess = records.len().saturating_sub(max);
    if excess > 0 {
        records.retain(|r| {
            let drop = excess > 0 && !r.is_active();
            excess -= usize::from(drop);
            !drop
        });
    }
}

/// Writes one line per record aside, syncs it, renames it over `path`, syncs
/// the directory; the journal (the handle opened before the rename, so it
/// is the new file whatever happens after) and its length.
fn compact(path: &Path, records: &[CallRecord]) -> Result<(File, u64), StoreError> {
    let io_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, op, source }
    };
    let tmp = path.with_extension("jsonl.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut out = OpenOptions::new().create_new(true).append(true).open(&tmp).map_err(io_err("create", &tmp))?;
    let mut buf = Vec::new();
    for record in records {
        append_line(&mut buf, record);
    }
    if let Err(e) = out.write_all(&buf).and_then(|()| out.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok((out, buf.len() as u64))
}

fn append_line(buf: &mut Vec<u8>, record: &CallRecord) {
    // Serialising a struct of strings and numbers cannot fail.
    if serde_json::to_writer(&mut *buf, record).is_ok() {
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cap4-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(id: &str, status: Status) -> CallRecord {
        CallRecord {
            id: id.into(),
            phone_number: "+100".into(),
            direction: crate::call::record::CallDirection::Outbound,
            status,
            outcome: None,
            reason: None,
            sip_code: None,
            sip_call_id: None,
            started_at: rfc3339(0),
            answered_at: None,
            ended_at: None,
            talk_ms: None,
            timeline: vec![TimelineEntry { at_ms: 0, event: "dial".into(), detail: None }],
            answer: None,
            audio: None,
            early_media: None,
            ai: None,
            transcript: Vec::new(),
            plan_run: None,
            attempt: None,
            transfer_to: None,
            recording: None,
        }
    }

    #[test]
    fn survives_reopen_and_keeps_the_newest_state() {
        let dir = temp_dir("reopen");
        let (mut store, report) = Store::open(&dir, 0).unwrap();
        assert_eq!(report, OpenReport::default());
        store.put(&record("a", Status::Dialing)).unwrap();
        let mut done = record("a", Status::Ended);
        done.outcome = Some(Outcome::Busy);
        store.put(&done).unwrap();
        store.put(&record("b", Status::Ended)).unwrap();
        drop(store);
        let (store, report) = Store::open(&dir, 0).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(store.get("a").unwrap().outcome, Some(Outcome::Busy));
        let ids: Vec<String> = store.list(10, None).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["b", "a"], "newest first");
        let ids: Vec<String> = store.list(10, Some("b")).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(store.list(1, None).unwrap().len(), 1);
        assert_eq!(store.list(1, Some("zzz")), Err(UnknownCursor));
        let lines = std::fs::read_to_string(dir.join(JOURNAL)).unwrap().lines().count();
        assert_eq!(lines, 2, "compacted to one line per call");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_newest_calls_are_kept_and_never_while_a_call_is_up() {
        let dir = temp_dir("retain");
        let limits = Limits { max_records: 3, compact_after_bytes: COMPACT_AFTER_BYTES };
        let (mut store, _) = Store::open_with(&dir, 0, limits).unwrap();
        store.put(&record("live", Status::Answered)).unwrap();
        for i in 0..5 {
            store.put(&record(&format!("c{i}"), Status::Ended)).unwrap();
        }
        assert_eq!(store.len(), 6, "nothing is rewritten while a call is up");
        store.put(&record("live", Status::Ended)).unwrap();
        let ids: Vec<String> = store.list(10, None).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["c4", "c3", "c2"], "once it ended, the oldest ended calls went");
        drop(store);
        let (store, report) = Store::open_with(&dir, 0, limits).unwrap();
        assert_eq!(report.records, 3);
        assert!(store.get("c1").is_none() && store.get("c4").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn transcript_saves_are_compacted_away_once_the_call_ends() {
        let dir = temp_dir("compact");
        let limits = Limits { max_records: MAX_RECORDS, compact_after_bytes: 16 << 10 };
        let (mut store, _) = Store::open_with(&dir, 0, limits).unwrap();
        for n in 0..3 {
            let mut call = record(&format!("long{n}"), Status::Answered);
            // A line more at every save, 200 saves, each re-appended whole.
            for i in 0..200 {
                call.timeline.push(TimelineEntry { at_ms: i, event: "line".into(), detail: Some("x".repeat(40)) });
                store.put(&call).unwrap();
            }
            assert!(store.journal_bytes() > 500_000, "{} bytes: saved on the call's path, not compacted", store.journal_bytes());
            call.status = Status::Ended;
            store.put(&call).unwrap();
            // One line per call now (about 80 bytes a timeline entry).
            let bound = (n as u64 + 1) * 201 * 100 + 2_000;
            assert!(store.journal_bytes() < bound, "{} bytes after call {n} ended", store.journal_bytes());
        }
        drop(store);
        let (store, _) = Store::open_with(&dir, 0, limits).unwrap();
        assert_eq!(store.get("long2").map(|r| (r.status, r.timeline.len())), Some((Status::Ended, 201)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_disk_loses_nothing_and_the_first_write_that_works_catches_up() {
        let dir = temp_dir("full");
        let (mut store, _) = Store::open(&dir, 0).unwrap();
        store.put(&record("a", Status::Dialing)).unwrap();
        // The disk fills up: /dev/full refuses every write with ENOSPC.
        let journal = std::mem::replace(&mut store.file, OpenOptions::new().append(true).open("/dev/full").unwrap());
        let err = store.put(&record("a", Status::Answered)).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        assert!(store.put(&record("b", Status::Dialing)).is_err());
        assert_eq!(store.get("a").map(|r| r.status), Some(Status::Answered), "the API shows the truth");
        assert!(store.unsynced().is_some_and(|why| why.contains("No space left")));
        // Space again.
        store.file = journal;
        store.put(&record("a", Status::Ended)).unwrap();
        assert_eq!(store.unsynced(), None);
        drop(store);
        let (store, report) = Store::open(&dir, 0).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(store.get("a").map(|r| r.status), Some(Status::Ended));
        assert!(store.get("b").is_some(), "the call saved only in memory reached the disk");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_journal_that_cannot_be_compacted_at_start_still_opens_and_catches_up() {
        let dir = temp_dir("nocompact");
        {
            let (mut store, _) = Store::open(&dir, 0).unwrap();
            store.put(&record("done", Status::Ended)).unwrap();
            store.put(&record("cut", Status::Answered)).unwrap();
        }
        // A torn last line, and a compaction that cannot be written (its
        // temporary path is taken, as a full disk would refuse it).
        let mut journal = OpenOptions::new().append(true).open(dir.join(JOURNAL)).unwrap();
        journal.write_all(b"{\"id\":\"torn").unwrap();
        std::fs::create_dir_all(dir.join("calls.jsonl.tmp/blocked")).unwrap();
        let (mut store, report) = Store::open(&dir, 0).unwrap();
        assert_eq!(report.interrupted, ["cut"]);
        assert!(store.unsynced().is_some(), "it says the disk is behind");
        assert_eq!(store.get("cut").map(|r| r.status), Some(Status::Ended), "the API has the truth");
        // The disk works again: the next write carries the interrupted call's end.
        std::fs::remove_dir_all(dir.join("calls.jsonl.tmp")).unwrap();
        store.put(&record("next", Status::Dialing)).unwrap();
        assert_eq!(store.unsynced(), None);
        drop(store);
        let (store, report) = Store::open(&dir, 0).unwrap();
        assert_eq!(report.records, 3, "{report:?}");
        assert_eq!(store.get("cut").and_then(|r| r.outcome), Some(Outcome::Failed));
        assert_eq!(store.get("done").map(|r| r.status), Some(Status::Ended));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let dir = temp_dir("lock");
        let (first, _) = Store::open(&dir, 0).unwrap();
        assert!(matches!(Store::open(&dir, 0), Err(StoreError::Locked { .. })));
        drop(first);
        assert!(Store::open(&dir, 0).is_ok(), "the lock goes with the store");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_last_line_is_skipped_and_active_calls_end_failed() {
        let dir = temp_dir("torn");
        let (mut store, _) = Store::open(&dir, 0).unwrap();
        let mut ended = record("done", Status::Ended);
        ended.outcome = Some(Outcome::RemoteHangup);
        store.put(&ended).unwrap();
        store.put(&record("live", Status::Answered)).unwrap();
        drop(store);
        // A power cut in the middle of the next append.
        let mut f = OpenOptions::new().append(true).open(dir.join(JOURNAL)).unwrap();
        f.write_all(br#"{"id":"live","phone_number":"+1"#).unwrap();
        drop(f);
        let (mut store, report) = Store::open(&dir, 1_000).unwrap();
        assert_eq!(report.skipped_lines, vec![3]);
        let kept = std::fs::read_to_string(dir.join(REJECTED)).unwrap();
        assert!(kept.starts_with(r#"{"id":"live","phone_number":"+1"#), "unreadable lines are kept aside");
        assert_eq!(report.interrupted, vec!["live".to_string()]);
        assert_eq!(store.get("done").unwrap().outcome, Some(Outcome::RemoteHangup));
        let live = store.get("live").unwrap();
        assert_eq!((live.status, live.outcome), (Status::Ended, Some(Outcome::Failed)));
        // Appends after the repair are whole lines again.
        store.put(&record("next", Status::Dialing)).unwrap();
        drop(store);
        let (_, report) = Store::open(&dir, 2_000).unwrap();
        assert!(report.skipped_lines.is_empty());
        assert_eq!(report.records, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
