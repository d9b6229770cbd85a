//! Blocking work from async tasks: [`off_the_worker`] runs a closure that
//! may block (an fsync on a slow SD card, a file read) without holding up
//! the other tasks of the tokio worker it is called on. A leaf: it uses no
//! other module of cap4, so the controller and the webhook both can.

/// Runs `f`, which may block on the disk, without holding up the other tasks
/// of this worker: on the daemon's multi-thread runtime the worker's other
/// tasks move to another thread meanwhile (`block_in_place`); elsewhere (a
/// current-thread runtime in tests, no runtime) it just runs.
pub fn off_the_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
