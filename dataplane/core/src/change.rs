//! Changes the control side asks of the slow path, the single writer of routes and neighbours:
//! each request carries a one-slot reply channel, and the control side waits for the answer with
//! a timeout.
//!
//! A request is settled exactly once: the slow path claims it before acting, the waiter abandons
//! it when its time is up, and whichever comes first wins. So a change reported as timed out has
//! not happened and never will, and a change the slow path has started is always answered (the
//! waiter then waits for the answer; the work is bounded by the table limits). Sending and waiting
//! are separate calls, so a test can send, step the slow path by hand and then wait, on one thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

const OPEN: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

/// Why a change was not made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError<E> {
    /// The slow path checked the change and refused it; nothing changed.
    #[error(transparent)]
    Refused(E),
    /// Too many changes wait for the slow path already; nothing changed.
    #[error("the slow path's queue of changes is full")]
    QueueFull,
    /// The slow path did not take the change in time; it never will, so nothing changed.
    #[error("the slow path did not take the change within {0:?}; nothing changed")]
    TimedOut(Duration),
    /// The slow path has stopped.
    #[error("the slow path has stopped")]
    SlowPathGone,
}

/// A new request: the slow path's end and the control side's end.
pub fn request<T, E>() -> (Reply<T, E>, PendingChange<T, E>) {
    let (sender, receiver) = bounded(1);
    let state = Arc::new(AtomicU8::new(OPEN));
    (
        Reply {
            sender,
            state: state.clone(),
        },
        PendingChange { receiver, state },
    )
}

/// The slow path's end of a request.
#[derive(Debug)]
pub struct Reply<T, E> {
    sender: Sender<Result<T, E>>,
    state: Arc<AtomicU8>,
}

impl<T, E> Reply<T, E> {
    /// Makes the change with `act` and answers, unless the waiter has given up: then nothing is
    /// done.
    pub fn answer_with(self, act: impl FnOnce() -> Result<T, E>) {
        let claimed = self
            .state
            .compare_exchange(OPEN, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if claimed {
            // The only message on a one-slot channel always fits; an error means the waiter
            // dropped its end without waiting, and the change stands anyway.
            let _ = self.sender.try_send(act());
        }
    }
}

/// The control side's end of a request: the change is known to be made once waited for.
#[derive(Debug)]
#[must_use = "whether the change was made is only known by waiting for it"]
pub struct PendingChange<T, E> {
    receiver: Receiver<Result<T, E>>,
    state: Arc<AtomicU8>,
}

impl<T, E> PendingChange<T, E> {
    /// The slow path's answer. After `timeout` without one, the request is abandoned if the slow
    /// path has not taken it yet ([`ChangeError::TimedOut`]); if it has, its answer is awaited.
    pub fn wait(self, timeout: Duration) -> Result<T, ChangeError<E>> {
        let answer = match self.receiver.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Disconnected) => return Err(ChangeError::SlowPathGone),
            Err(RecvTimeoutError::Timeout) => {
                let abandoned = self
                    .state
                    .compare_exchange(OPEN, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if abandoned {
                    return Err(ChangeError::TimedOut(timeout));
                }
                // Taken just now: the answer is on its way (or the slow path died making it).
                self.receiver
                    .recv()
                    .map_err(|_| ChangeError::SlowPathGone)?
            }
        };
        answer.map_err(ChangeError::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(1);

    #[test]
    fn an_answer_given_before_the_wait_is_received() {
        let (reply, pending) = request::<u32, String>();
        reply.answer_with(|| Ok(7));
        assert_eq!(pending.wait(SHORT), Ok(7));
        let (reply, pending) = request::<u32, String>();
        reply.answer_with(|| Err("no".into()));
        assert_eq!(pending.wait(SHORT), Err(ChangeError::Refused("no".into())));
    }

    #[test]
    fn a_request_that_timed_out_is_never_acted_on() {
        let (reply, pending) = request::<u32, String>();
        assert_eq!(pending.wait(SHORT), Err(ChangeError::TimedOut(SHORT)));
        let mut acted = false;
        reply.answer_with(|| {
            acted = true;
            Ok(1)
        });
        assert!(!acted);
    }

    #[test]
    fn a_request_taken_before_the_timeout_is_answered_after_it() {
        let (reply, pending) = request::<u32, String>();
        let (taken, was_taken) = bounded(1);
        let (release, released) = bounded::<()>(1);
        let slow_path = std::thread::spawn(move || {
            reply.answer_with(|| {
                let _ = taken.send(());
                let _ = released.recv();
                Ok(9)
            })
        });
        was_taken.recv().expect("taken");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = release.send(());
        });
        assert_eq!(pending.wait(SHORT), Ok(9), "outlived its timeout");
        slow_path.join().expect("joins");
        releaser.join().expect("joins");
    }

    #[test]
    fn a_request_dropped_unanswered_means_the_slow_path_is_gone() {
        let (reply, pending) = request::<u32, String>();
        drop(reply);
        assert_eq!(pending.wait(SHORT), Err(ChangeError::SlowPathGone));
    }
}
