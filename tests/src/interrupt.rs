//! Ctrl-C handling: a process-wide flag that the crate's bounded loops poll, so that an
//! interrupted run returns normally and [`crate::Lab`]'s `Drop` removes the namespaces.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::LabError;

static INTERRUPT_FLAG: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);
static HANDLERS_INSTALLED: Mutex<bool> = Mutex::new(false);

/// Exit status when a second SIGINT or SIGTERM arrives while the first is still being handled.
const SECOND_SIGNAL_EXIT_STATUS: i32 = 130;

/// Makes SIGINT and SIGTERM raise the returned flag instead of killing the process. Every
/// bounded loop of this crate (commands, traffic, [`wait_until`]) then stops with
/// [`LabError::Interrupted`]; long loops of the caller should poll the flag too. A second
/// signal while the flag is raised exits at once, for when cleanup itself hangs.
/// Calling this again returns the same flag.
pub fn install_interrupt_flag() -> Result<Arc<AtomicBool>, LabError> {
    let mut installed = HANDLERS_INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !*installed {
        for signal in [SIGINT, SIGTERM] {
            let context = format!("installing the handler for signal {signal}");
            // Registered first so that it sees the flag as it was before this signal.
            signal_hook::flag::register_conditional_shutdown(
                signal,
                SECOND_SIGNAL_EXIT_STATUS,
                Arc::clone(&INTERRUPT_FLAG),
            )
            .map_err(LabError::io(context.clone()))?;
            signal_hook::flag::register(signal, Arc::clone(&INTERRUPT_FLAG))
                .map_err(LabError::io(context))?;
        }
        *installed = true;
    }
    Ok(Arc::clone(&INTERRUPT_FLAG))
}

/// Whether the interrupt flag has been raised (never, unless [`install_interrupt_flag`] ran).
pub fn interrupted() -> bool {
    INTERRUPT_FLAG.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupted() -> Result<(), LabError> {
    if interrupted() {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// Polls `condition` every `poll_interval` until it holds, for at most `deadline`. Returns how
/// long it took; fails with [`LabError::Timeout`] or [`LabError::Interrupted`]. Tests wait on
/// readiness with this, never on a fixed sleep.
pub fn wait_until(
    deadline: Duration,
    poll_interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<Duration, LabError> {
    if poll_interval.is_zero() {
        return Err(LabError::invalid_argument(
            "poll_interval",
            "must be longer than zero",
        ));
    }
    let started = Instant::now();
    loop {
        if condition() {
            return Ok(started.elapsed());
        }
        check_interrupted()?;
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            return Err(LabError::Timeout {
                what: "the awaited condition".to_owned(),
                limit: deadline,
            });
        }
        thread::sleep(poll_interval.min(deadline - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let mut polls = 0;
        wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            polls += 1;
            polls == 3
        })
        .expect("holds on the third poll");
        assert_eq!(polls, 3);
    }

    #[test]
    fn installing_twice_returns_the_same_flag_unraised() {
        let first = install_interrupt_flag().expect("handlers install");
        let second = install_interrupt_flag().expect("second call is a no-op");
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!interrupted());
    }

    #[test]
    fn wait_until_times_out_and_rejects_a_zero_interval() {
        let started = Instant::now();
        let error = wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
            false
        })
        .expect_err("never holds");
        assert!(matches!(error, LabError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(wait_until(Duration::from_secs(1), Duration::ZERO, || true).is_err());
    }
}
