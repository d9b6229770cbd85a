//! The agent-audio playout queue: chunks of agent speech in arrival order,
//! each with its `event_id`, taken out in frames of any size (partial chunks
//! carry over), flushed at once on an interruption.
//!
//! Promises: after `interrupt(K)` nothing queued before it comes out, and
//! chunks of turns `<= K` pushed later are refused; it never holds more than
//! its limit (a chunk that would pass it is refused, and counted); nothing
//! else is ever dropped or reordered. No I/O, no clock; the caller paces it.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Playout {
    queue: VecDeque<(u64, Vec<i16>)>,
    /// Read position in the front chunk.
    offset: usize,
    queued: usize,
    /// Most samples held at once.
    limit: usize,
    interrupted_upto: Option<u64>,
    refused: u64,
    overflowed: u64,
}

impl Default for Playout {
    fn default() -> Self {
        Playout::bounded(usize::MAX)
    }
}

impl Playout {
    pub fn new() -> Playout {
        Playout::default()
    }

    /// A queue that holds at most `limit` samples.
    pub fn bounded(limit: usize) -> Playout {
        Playout { queue: VecDeque::new(), offset: 0, queued: 0, limit, interrupted_upto: None, refused: 0, overflowed: 0 }
    }

    /// Whether audio of turn `event_id` is still taken (its turn was not interrupted).
    pub fn accepts(&self, event_id: u64) -> bool {
        self.interrupted_upto.is_none_or(|k| event_id > k)
    }

    /// Queues a chunk; `false` (and nothing queued) if its turn was interrupted.
    pub fn push(&mut self, event_id: u64, samples: Vec<i16>) -> bool {
        if !self.accepts(event_id) {
            self.refused += samples.len() as u64;
            return false;
        }
        if self.queued.saturating_add(samples.len()) > self.limit {
            // An agent sending far ahead of what can be played: not held.
            self.overflowed += samples.len() as u64;
            return false;
        }
        if !samples.is_empty() {
            self.queued += samples.len();
            self.queue.push_back((event_id, samples));
        }
        true
    }

    /// Barge-in: drops everything queued; returns how many samples were dropped.
    pub fn interrupt(&mut self, event_id: u64) -> usize {
        self.interrupted_upto = Some(self.interrupted_upto.map_or(event_id, |k| k.max(event_id)));
        let dropped = self.queued;
        self.queue.clear();
        self.offset = 0;
        self.queued = 0;
        dropped
    }

    /// Fills `out` from the front; returns how many samples were written
    /// (fewer than `out.len()` only when the queue ran dry).
    pub fn pop(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        while written < out.len() {
            let Some((_, front)) = self.queue.front() else { break };
            let n = (front.len() - self.offset).min(out.len() - written);
            out[written..written + n].copy_from_slice(&front[self.offset..self.offset + n]);
            written += n;
            self.offset += n;
            if self.offset == front.len() {
                self.queue.pop_front();
                self.offset = 0;
            }
        }
        self.queued -= written;
        written
    }

    pub fn queued_samples(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Samples refused because their turn had been interrupted.
    pub fn refused_samples(&self) -> u64 {
        self.refused
    }

    /// Samples refused because the queue was at its limit.
    pub fn overflowed_samples(&self) -> u64 {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_never_holds_more_than_its_limit() {
        let mut p = Playout::bounded(5);
        assert!(p.push(1, vec![1, 2, 3]));
        assert!(!p.push(1, vec![4, 5, 6]), "past the limit: refused whole");
        assert!(p.push(1, vec![4, 5]));
        assert_eq!((p.queued_samples(), p.overflowed_samples()), (5, 3));
        let mut out = [0; 2];
        p.pop(&mut out);
        assert!(p.push(2, vec![6, 7]), "room again once played");
        let mut rest = [0; 5];
        assert_eq!(p.pop(&mut rest), 5);
        assert_eq!(rest, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn frames_cross_chunk_boundaries_in_order() {
        let mut p = Playout::new();
        p.push(1, vec![1, 2, 3]);
        p.push(1, vec![4, 5]);
        p.push(2, vec![6]);
        let mut out = [0; 4];
        assert_eq!(p.pop(&mut out), 4);
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(p.queued_samples(), 2);
        assert_eq!(p.pop(&mut out), 2);
        assert_eq!(&out[..2], &[5, 6]);
        assert!(p.is_empty());
    }

    #[test]
    fn an_interruption_flushes_and_refuses_late_chunks_of_its_turn() {
        let mut p = Playout::new();
        p.push(3, vec![7; 100]);
        let mut out = [0; 10];
        p.pop(&mut out);
        assert_eq!(p.interrupt(3), 90);
        assert!(!p.push(3, vec![7; 50]), "late chunk of turn 3");
        assert!(!p.push(2, vec![7; 50]));
        assert!(p.push(4, vec![8; 5]));
        assert_eq!(p.pop(&mut out), 5);
        assert_eq!(&out[..5], &[8; 5]);
        assert_eq!(p.refused_samples(), 100);
    }
}
