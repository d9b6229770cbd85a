//! The call button: a thread that waits on the button line's (debounced) edges and
//! tells the controller about short and long presses.
//!
//! A long press fires while the button is still held, the moment it has been held
//! for `long_press`, so the person sees the call end without letting go; the
//! release that follows is ignored. What a press does is the controller's call.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::gpio::{Edge, InputLine};

/// What the person did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Short,
    Long,
}

/// Starts the button thread. It ends when the receiver is dropped.
pub fn spawn(mut line: Box<dyn InputLine>, long_press: Duration, presses: mpsc::Sender<Press>) {
    let spawned = std::thread::Builder::new().name("cap4-button".into()).spawn(move || {
        loop {
            match line.wait_edge(None) {
                Ok(Some(Edge::Active)) => {}
                Ok(_) => continue,
                Err(err) => {
                    warn!(%err, "button line failed; button disabled");
                    return;
                }
            }
            let pressed = Instant::now();
            let press = loop {
                let left = long_press.saturating_sub(pressed.elapsed());
                match line.wait_edge(Some(left)) {
                    Ok(Some(Edge::Inactive)) => break Press::Short,
                    Ok(Some(Edge::Active)) => continue,
                    Ok(None) => break Press::Long,
                    Err(err) => {
                        warn!(%err, "button line failed; button disabled");
                        return;
                    }
                }
            };
            info!(press = ?press, held_ms = pressed.elapsed().as_millis() as u64, "button pressed");
            if presses.blocking_send(press).is_err() {
                return;
            }
            if press == Press::Long {
                // Swallow the release of a long press.
                while !matches!(line.wait_edge(None), Ok(Some(Edge::Inactive)) | Err(_)) {}
            }
        }
    });
    if let Err(err) = spawned {
        warn!(%err, "cannot start the button thread");
    }
}
