//! Threads for transfers, kept a while for the next one. Every download (a random read through
//! the mount is one) sends its file on a thread of its own; creating that thread was about 5 %
//! of the server's CPU per short download. A thread that finished waits [`IDLE`] for new work
//! before it ends, and there is never a cap: a transfer lasts as long as its client takes, so
//! new work never waits behind a slow one.

use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long a thread without work stays for the next.
const IDLE: Duration = Duration::from_secs(10);

#[cfg(test)]
thread_local! {
    /// Jobs this thread has started: tests tell a reused thread from a new one by it.
    static JOBS_RUN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    /// Jobs waiting for a thread, each with its number.
    jobs: VecDeque<(u64, Job)>,
    next: u64,
    /// Threads waiting for a job. Each queued job has one of them, or a new thread, for it.
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State::default()),
        work: Condvar::new(),
    })
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job runs outside the lock, so a panic never poisons it; take it over all the same.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Run `job` on a thread of the pool: an idle one, or a new one when none is idle.
pub fn run(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let pool = pool();
    let mut state = pool.lock();
    let number = state.next;
    state.next += 1;
    state.jobs.push_back((number, Box::new(job)));
    if state.idle >= state.jobs.len() {
        pool.work.notify_one();
        return Ok(());
    }
    drop(state);
    let started = std::thread::Builder::new()
        .name("midasfs-transfer".to_owned())
        .spawn(work);
    if let Err(err) = started {
        // Take the job back unless a thread that came free took it meanwhile: then it runs,
        // and otherwise the caller's error is its only outcome.
        let mut state = pool.lock();
        if let Some(at) = state.jobs.iter().position(|(n, _)| *n == number) {
            state.jobs.remove(at);
            return Err(err);
        }
    }
    Ok(())
}

/// A pool thread: jobs until none comes for [`IDLE`].
fn work() {
    let pool = pool();
    loop {
        let mut state = pool.lock();
        state.idle += 1;
        while state.jobs.is_empty() {
            let (next, waited) = pool
                .work
                .wait_timeout(state, IDLE)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if waited.timed_out() && state.jobs.is_empty() {
                state.idle -= 1;
                return;
            }
        }
        state.idle -= 1;
        let job = state.jobs.pop_front();
        drop(state);
        if let Some((_, job)) = job {
            #[cfg(test)]
            JOBS_RUN.set(JOBS_RUN.get() + 1);
            job();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};

    use super::*;

    #[test]
    fn a_job_runs_at_once_even_while_others_are_still_running() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for _ in 0..8 {
            let rx = Arc::clone(&release_rx);
            run(move || {
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
            })
            .unwrap();
        }
        let (done_tx, done_rx) = mpsc::channel();
        run(move || done_tx.send(()).unwrap()).unwrap();
        let ran = done_rx.recv_timeout(Duration::from_secs(10));
        for _ in 0..8 {
            release_tx.send(()).unwrap();
        }
        assert!(
            ran.is_ok(),
            "the ninth job waited behind eight blocked ones"
        );
    }

    #[test]
    fn a_thread_that_finished_takes_the_next_job() {
        let (tx, rx) = mpsc::channel();
        let first = tx.clone();
        run(move || first.send(JOBS_RUN.get()).unwrap()).unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap() >= 1);
        // Let that thread get back to waiting.
        std::thread::sleep(Duration::from_millis(100));
        run(move || tx.send(JOBS_RUN.get()).unwrap()).unwrap();
        let runs = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            runs >= 2,
            "the second job ran on a new thread (its first job), not on the idle one"
        );
    }
}
