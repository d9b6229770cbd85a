//! The plan runs on disk: `plans.jsonl` in the storage directory, one run
//! state per line, the newest line for an id winning.
//!
//! Promises: [`RunJournal::append`] returns after the line is written and
//! `fdatasync`ed (a run survives a power cut as the call records do); at
//! open a torn or unreadable line is skipped and counted, and the journal
//! is compacted to one line per run (temporary file, synced, renamed, the
//! directory synced); a failed append is cut back so the next line starts
//! clean. The call store's lock on the directory keeps a second daemon out.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::run::PlanRun;

const FILE: &str = "plans.jsonl";

#[derive(Debug)]
pub struct JournalError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: io::Error,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for JournalError {}

#[derive(Debug)]
pub struct RunJournal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// What the journal held at open.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Oldest first.
    pub runs: Vec<PlanRun>,
    /// 1-based numbers of the lines that were not a run.
    pub skipped_lines: Vec<usize>,
}

impl RunJournal {
    /// Opens (creating) the journal in `dir`, keeping at most `max_runs`
    /// (the newest, and every running one).
    pub fn open(dir: &Path, max_runs: usize) -> Result<(RunJournal, Loaded), JournalError> {
        let path = dir.join(FILE);
        let err = |op, source| JournalError { path: path.clone(), op, source };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err("read", e)),
        };
        let mut loaded = Loaded::default();
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<PlanRun>(line) {
                Ok(run) => match loaded.runs.iter_mut().find(|r| r.id == run.id) {
                    Some(old) => *old = run,
                    None => loaded.runs.push(run),
                },
                Err(_) => loaded.skipped_lines.push(n + 1),
            }
        }
        while loaded.runs.len() > max_runs {
            match loaded.runs.iter().position(|r| !r.is_running()) {
                Some(i) => {
                    loaded.runs.remove(i);
                }
                None => break,
            }
        }
        let mut text = Vec::new();
        for run in &loaded.runs {
            text.extend(serde_json::to_vec(run).map_err(|e| err("encode", io::Error::other(e)))?);
            text.push(b'\n');
        }
        let temporary = dir.join(format!("{FILE}.tmp"));
        let compacted = File::create(&temporary)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&temporary, &path))
            .and_then(|()| File::open(dir).and_then(|d| d.sync_all()));
        if let Err(e) = compacted {
            // A full disk or a read-only card: go on with the journal as it is.
            tracing::warn!(err = %e, path = %path.display(), "plan journal not compacted");
            let _ = std::fs::remove_file(&temporary);
        }
        // Not O_APPEND: `write_all_at` must write where it is told (Linux
        // appends O_APPEND writes whatever the offset). A torn tail left by
        // a compaction that failed is cut, so the next line starts clean.
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| err("open", e))?;
        let on_disk = file.metadata().map_err(|e| err("stat", e))?.len();
        let whole = std::fs::read(&path).map_err(|e| err("read", e))?;
        let len = whole.iter().rposition(|&b| b == b'\n').map_or(0, |i| i as u64 + 1);
        if len < on_disk {
            let _ = file.set_len(len);
        }
        Ok((RunJournal { path, file, len }, loaded))
    }

    /// Appends `run`'s state, synced.
    pub fn append(&mut self, run: &PlanRun) -> Result<(), JournalError> {
        let err = |op, source| JournalError { path: self.path.clone(), op, source };
        let mut line = serde_json::to_vec(run).map_err(|e| err("encode", io::Error::other(e)))?;
        line.push(b'\n');
        // A line cut short by a failed write would glue onto the next one.
        if let Err(e) = self.file.write_all_at(&line, self.len).and_then(|()| self.file.sync_data()) {
            let _ = self.file.set_len(self.len);
            return Err(err("append", e));
        }
        self.len += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;
    use crate::phone::PhoneNumber;
    use crate::plan::config::Plan;
    use crate::plan::machine::PlanRuns;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cap4-plan-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn the_newest_state_of_each_run_survives_a_torn_line_and_a_reopen() {
        let dir = dir("torn");
        let now = Now { mono_ms: 0, unix_ms: 1_000 };
        let mut runs = PlanRuns::default();
        let plan = Plan::single("button", PhoneNumber::parse("+15550001").expect("number"));
        let (mut journal, loaded) = RunJournal::open(&dir, 10).expect("open");
        assert!(loaded.runs.is_empty());
        let run = runs.start(plan, "r1".into(), "api", now).expect("start");
        journal.append(&run).expect("append");
        let attempt = runs.due(now).expect("due");
        let run = runs.placed(&attempt, "c1").expect("placed");
        journal.append(&run).expect("append");
        drop(journal);
        // A write cut short by a power cut.
        OpenOptions::new().append(true).open(dir.join(FILE)).and_then(|mut f| f.write_all(b"{\"id\":\"r2\",\"pl")).expect("tear");
        let (_journal, loaded) = RunJournal::open(&dir, 10).expect("reopen");
        assert_eq!(loaded.skipped_lines, [3]);
        assert_eq!(loaded.runs, [run]);
        let text = std::fs::read_to_string(dir.join(FILE)).expect("read");
        assert_eq!(text.lines().count(), 1, "compacted to one line per run");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
