//! Log output: journald (native fields) when stderr is the journal, readable lines
//! on stderr otherwise. "Stderr is the journal" is systemd's own test: the
//! `JOURNAL_STREAM` variable names the device and inode of the journal stream, and
//! they match stderr's (a variable inherited by a redirected child does not).
//!
//! Under journald, span fields become journal fields without a prefix, so every
//! line inside a call's span carries `CALL_ID=<id>` and `journalctl CALL_ID=<id>`
//! shows one whole call.

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `level` applies to cap4 itself; dependencies
/// log at warn or above.
pub fn init(level: Level) {
    let filter = Targets::new().with_target("cap4", level).with_default(Level::WARN);
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(None).with_syslog_identifier("cap4".into());
                let _ = tracing_subscriber::registry().with(layer).with(filter).try_init();
                return;
            }
            Err(err) => eprintln!("cap4: journald unavailable ({err}); logging to stderr"),
        }
    }
    use std::io::IsTerminal;
    let stderr =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry().with(stderr).with(filter).try_init();
}

fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}
