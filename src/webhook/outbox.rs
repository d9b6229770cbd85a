//! The webhook's outbox: deliveries not made yet, one file each in
//! `<storage>/outbox/`, named `<created Unix ms>-<sequence>-<kind>.json`
//! and holding the exact body that is signed and sent.
//!
//! Promises: [`Outbox::put`] returns after the file is written, synced and
//! renamed into place and the directory synced, so a power cut leaves
//! either the whole delivery or none; files are taken oldest first; past
//! `max_pending` the oldest is dropped, counted and logged; a file that
//! cannot be read back is set aside as `*.bad`, not retried forever.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{error, warn};

#[derive(Debug)]
pub struct OutboxError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: io::Error,
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for OutboxError {}

/// One delivery waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub file: String,
    pub created_unix_ms: i64,
}

/// A delivery read back: its idempotency key (the record's `id`) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub pending: Pending,
    pub key: String,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    queue: VecDeque<Pending>,
    max_pending: usize,
    next_seq: u64,
    /// Deliveries dropped for room or age since the daemon started.
    pub dropped: u64,
}

impl Outbox {
    pub fn open(storage: &Path, max_pending: usize) -> Result<Outbox, OutboxError> {
        let dir = storage.join("outbox");
        let err = |op, source| OutboxError { path: dir.clone(), op, source };
        std::fs::create_dir_all(&dir).map_err(|e| err("create", e))?;
        let mut queue: Vec<(i64, u64, String)> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| err("list", e))? {
            let name = entry.map_err(|e| err("list", e))?.file_name().to_string_lossy().into_owned();
            if let Some((created, seq)) = parse_name(&name) {
                queue.push((created, seq, name));
            } else if name.ends_with(".tmp") {
                // A put cut short: never renamed, so never promised.
                let _ = std::fs::remove_file(dir.join(&name));
            }
        }
        queue.sort();
        let next_seq = queue.iter().map(|(_, seq, _)| seq + 1).max().unwrap_or(0);
        let queue = queue.into_iter().map(|(created_unix_ms, _, file)| Pending { file, created_unix_ms }).collect();
        let mut outbox = Outbox { dir, queue, max_pending, next_seq, dropped: 0 };
        outbox.make_room(0);
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Keeps `body` for delivery, synced.
    pub fn put(&mut self, kind: super::Kind, body: &[u8], now_unix_ms: i64) -> Result<(), OutboxError> {
        let file = format!("{now_unix_ms:013}-{:08}-{}.json", self.next_seq, kind.as_str());
        self.next_seq += 1;
        let path = self.dir.join(&file);
        let temporary = self.dir.join(format!("{file}.tmp"));
        let written = File::create(&temporary)
            .and_then(|mut f| f.write_all(body).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&temporary, &path))
            .and_then(|()| File::open(&self.dir).and_then(|d| d.sync_all()));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(OutboxError { path, op: "write", source });
        }
        self.make_room(1);
        self.queue.push_back(Pending { file, created_unix_ms: now_unix_ms });
        Ok(())
    }

    /// The oldest delivery, read back. Unreadable files are set aside.
    pub fn oldest(&mut self) -> Option<Delivery> {
        while let Some(pending) = self.queue.front().cloned() {
            let path = self.dir.join(&pending.file);
            let read = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|body| {
                let key = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_str).map(str::to_owned))
                    .ok_or_else(|| "not a record with an id".to_string())?;
                Ok((key, body))
            });
            match read {
                Ok((key, body)) => return Some(Delivery { pending, key, body }),
                Err(why) => {
                    error!(file = %pending.file, %why, "webhook delivery unreadable; set aside as .bad");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                    self.queue.pop_front();
                }
            }
        }
        None
    }

    /// `pending` was delivered (or given up on): its file goes.
    pub fn remove(&mut self, pending: &Pending) {
        self.queue.retain(|p| p != pending);
        if let Err(e) = std::fs::remove_file(self.dir.join(&pending.file)) {
            if e.kind() != io::ErrorKind::NotFound {
                // It will be sent again after a restart: at least once.
                warn!(file = %pending.file, err = %e, "delivered webhook file not removed");
            }
        }
    }

    /// Gives up on `pending` (the receiver refuses it for good): its file is
    /// kept as `*.bad` for a person to look at, and counted as dropped.
    pub fn set_aside(&mut self, pending: &Pending) {
        self.queue.retain(|p| p != pending);
        self.dropped += 1;
        let path = self.dir.join(&pending.file);
        if let Err(e) = std::fs::rename(&path, path.with_extension("bad")) {
            warn!(file = %pending.file, err = %e, "refused webhook delivery not set aside");
        }
    }

    /// Drops deliveries older than `max_age_ms`; how many went.
    pub fn expire(&mut self, now_unix_ms: i64, max_age_ms: i64) -> usize {
        let old: Vec<Pending> = self.queue.iter().filter(|p| now_unix_ms - p.created_unix_ms > max_age_ms).cloned().collect();
        for pending in &old {
            warn!(file = %pending.file, "webhook delivery given up: retried for its whole max_age_h");
            self.remove(pending);
            self.dropped += 1;
        }
        old.len()
    }

    /// Drops the oldest until `extra` more fit.
    fn make_room(&mut self, extra: usize) {
        while self.queue.len() + extra > self.max_pending {
            let Some(oldest) = self.queue.front().cloned() else { break };
            self.dropped += 1;
            warn!(file = %oldest.file, dropped = self.dropped, max_pending = self.max_pending, "webhook outbox full; oldest delivery dropped");
            self.remove(&oldest);
        }
    }
}

/// `(created, sequence)` of an outbox file name.
fn parse_name(name: &str) -> Option<(i64, u64)> {
    let stem = name.strip_suffix(".json")?;
    let mut parts = stem.splitn(3, '-');
    let created = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((created, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::Kind;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cap4-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn deliveries_come_back_oldest_first_after_a_reopen() {
        let dir = dir("order");
        let mut outbox = Outbox::open(&dir, 10).expect("open");
        outbox.put(Kind::Call, br#"{"id":"c1"}"#, 1_000).expect("put");
        outbox.put(Kind::PlanRun, br#"{"id":"r1"}"#, 1_000).expect("put");
        drop(outbox);
        // A put cut short before its rename.
        std::fs::write(dir.join("outbox/0000000002000-00000009-call.json.tmp"), b"{").expect("tmp");
        let mut outbox = Outbox::open(&dir, 10).expect("reopen");
        assert_eq!(outbox.len(), 2);
        let first = outbox.oldest().expect("first");
        assert_eq!((first.key.as_str(), first.body.as_slice()), ("c1", br#"{"id":"c1"}"#.as_slice()));
        outbox.remove(&first.pending);
        assert_eq!(outbox.oldest().map(|d| d.key), Some("r1".into()));
        outbox.put(Kind::Call, br#"{"id":"c2"}"#, 2_000).expect("put");
        assert!(!outbox.queue.iter().any(|p| p.file.ends_with(".tmp")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bounded_by_count_and_age_and_an_unreadable_file_is_set_aside() {
        let dir = dir("bounds");
        let mut outbox = Outbox::open(&dir, 2).expect("open");
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            outbox.put(Kind::Call, format!(r#"{{"id":"{id}"}}"#).as_bytes(), 1_000 + i as i64).expect("put");
        }
        assert_eq!((outbox.len(), outbox.dropped), (2, 1));
        assert_eq!(outbox.oldest().map(|d| d.key), Some("b".into()), "the oldest went");
        assert_eq!(outbox.expire(1_502, 500), 1, "b is older than 500 ms, c not yet");
        assert_eq!(outbox.oldest().map(|d| d.key), Some("c".into()));
        outbox.put(Kind::Call, b"not json", 5_000).expect("put");
        let c = outbox.oldest().expect("c");
        outbox.remove(&c.pending);
        assert_eq!(outbox.oldest(), None, "the unreadable one is set aside");
        assert!(
            std::fs::read_dir(dir.join("outbox")).expect("list").any(|e| e.expect("entry").file_name().to_string_lossy().ends_with(".bad"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
