//! Supervision of the daemon's long-lived tasks (the controller, the HTTP API,
//! the Baresip link): they run until shutdown, so one that ends before it (a
//! panic, or a return nobody asked for) leaves a daemon that answers 503 or
//! nothing at all. [`until_shutdown`] waits for the shutdown signal or the
//! first such end, and names the task and how it ended.
//!
//! Promises: returns `Ok` only when `shutdown` completed first; otherwise the
//! [`TaskEnded`] of the first task to end, its panic message included. The
//! handles are borrowed, so after `Ok` the caller still stops them in order.

use std::fmt;
use std::future::Future;

use futures_util::future::{Either, select, select_all};
use tokio::task::JoinHandle;

/// A task that ended while the daemon was meant to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnded {
    pub task: &'static str,
    /// "returned", or "panicked: <message>".
    pub how: String,
}

impl fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} task {} before shutdown", self.task, self.how)
    }
}

impl std::error::Error for TaskEnded {}

/// Waits for `shutdown`, or for the first of `tasks` to end.
pub async fn until_shutdown(
    shutdown: impl Future<Output = ()>,
    tasks: &mut [(&'static str, &mut JoinHandle<()>)],
) -> Result<(), TaskEnded> {
    if tasks.is_empty() {
        shutdown.await;
        return Ok(());
    }
    let names: Vec<&'static str> = tasks.iter().map(|(name, _)| *name).collect();
    let ends = select_all(tasks.iter_mut().map(|(_, handle)| &mut **handle));
    match select(std::pin::pin!(shutdown), ends).await {
        Either::Left(((), _)) => Ok(()),
        Either::Right(((result, index, _), _)) => {
            let how = match result {
                Ok(()) => "returned".to_string(),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into());
                    format!("panicked: {message}")
                }
                Err(_) => "was cancelled".to_string(),
            };
            Err(TaskEnded { task: names[index], how })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn forever() -> JoinHandle<()> {
        tokio::spawn(std::future::pending())
    }

    #[tokio::test]
    async fn shutdown_first_is_ok_and_leaves_the_tasks_running() {
        let (mut a, mut b) = (forever(), forever());
        let r = until_shutdown(tokio::time::sleep(Duration::from_millis(10)), &mut [("a", &mut a), ("b", &mut b)]).await;
        assert_eq!(r, Ok(()));
        assert!(!a.is_finished() && !b.is_finished());
        a.abort();
        b.abort();
    }

    #[tokio::test]
    async fn a_task_that_panics_or_returns_is_named() {
        let mut panics = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("the controller lost its mind");
        });
        let mut fine = forever();
        let r = until_shutdown(std::future::pending(), &mut [("HTTP API", &mut fine), ("controller", &mut panics)]).await;
        let ended = r.unwrap_err();
        assert_eq!(ended.task, "controller");
        assert_eq!(ended.how, "panicked: the controller lost its mind");
        assert!(ended.to_string().contains("controller task panicked"));

        let mut returns = tokio::spawn(async {});
        let r = until_shutdown(std::future::pending(), &mut [("Baresip link", &mut returns), ("HTTP API", &mut fine)]).await;
        assert_eq!(r, Err(TaskEnded { task: "Baresip link", how: "returned".into() }));
        fine.abort();
    }
}
