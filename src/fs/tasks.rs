//! Background work the filesystem starts on its own (uploads after a last close, early uploads,
//! listings ahead of a walk), tracked: unmount waits for the work that keeps data safe and
//! cancels the work nobody needs any more. The FUSE adapter starts none of it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

/// Whether unmount waits for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Data goes to the server (or to the recovery directory): unmount waits for it.
    Needed,
    /// Only spares time later (a listing ahead of a walk): cancelled at unmount.
    Optional,
}

/// The tasks running, by kind, and the signal that cancels the optional ones.
pub struct Tasks {
    /// Where tasks run: the runtime the filesystem was made in, else the caller's.
    runtime: Option<Handle>,
    needed: Arc<Count>,
    optional: Arc<Count>,
    cancel: watch::Sender<bool>,
}

#[derive(Default)]
struct Count {
    running: AtomicUsize,
    /// Woken when `running` drops.
    ended: Notify,
}

/// Counts one task as running until dropped (whether it ends, panics or is cancelled).
struct Running(Arc<Count>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl Tasks {
    /// Tasks run on `runtime`, or (None) on the runtime of whoever starts them.
    pub fn new(runtime: Option<Handle>) -> Tasks {
        Tasks {
            runtime,
            needed: Arc::default(),
            optional: Arc::default(),
            cancel: watch::channel(false).0,
        }
    }

    /// Runs `work` in the background; optional work stops when [`Tasks::cancel_optional`] is
    /// called, wherever it waits.
    pub fn spawn(&self, kind: Work, work: impl Future<Output = ()> + Send + 'static) {
        let count = match kind {
            Work::Needed => &self.needed,
            Work::Optional => &self.optional,
        };
        count.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(Arc::clone(count));
        let mut cancelled = self.cancel.subscribe();
        let runtime = self.runtime.clone().unwrap_or_else(|| {
            Handle::try_current().expect("the filesystem's background work needs a tokio runtime")
        });
        runtime.spawn(async move {
            let _running = running;
            match kind {
                Work::Needed => work.await,
                Work::Optional => {
                    tokio::select! {
                        () = work => {}
                        _ = cancelled.wait_for(|cancel| *cancel) => {}
                    }
                }
            }
        });
    }

    /// Tasks running: needed and optional.
    pub fn running(&self) -> (usize, usize) {
        (
            self.needed.running.load(Ordering::Acquire),
            self.optional.running.load(Ordering::Acquire),
        )
    }

    /// Stops the optional tasks at their next await, and starts none any more.
    pub fn cancel_optional(&self) {
        self.cancel.send_replace(true);
    }

    /// Waits until no needed task runs, or `limit` passed; true if none runs.
    pub async fn wait_needed(&self, limit: Duration) -> bool {
        let count = &self.needed;
        let wait = async {
            loop {
                let ended = count.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if count.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unmount_waits_for_needed_work_and_cancels_optional_work() {
        let tasks = Tasks::new(None);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(Work::Needed, async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        });
        tasks.spawn(Work::Optional, std::future::pending());
        assert_eq!(tasks.running(), (1, 1));
        tasks.cancel_optional();
        assert!(tasks.wait_needed(Duration::from_secs(5)).await);
        assert!(done_rx.await.is_ok(), "the needed work ran to its end");
        for _ in 0..100 {
            if tasks.running() == (0, 0) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(tasks.running(), (0, 0));
    }

    #[tokio::test]
    async fn waiting_gives_up_after_the_limit() {
        let tasks = Tasks::new(Some(Handle::current()));
        tasks.spawn(Work::Needed, std::future::pending());
        assert!(!tasks.wait_needed(Duration::from_millis(20)).await);
    }
}
