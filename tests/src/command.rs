//! Running external tools (`ip`, `ethtool`, `sysctl`, `ping`, `python3`) with a time limit.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::LabError;
use crate::interrupt::interrupted;

/// Limit for one setup or teardown command; they normally take milliseconds.
pub(crate) const SETUP_COMMAND_TIME_LIMIT: Duration = Duration::from_secs(10);
/// Output beyond this is not read: the tools used here print far less.
const OUTPUT_BYTES_MAX: u64 = 4 << 20;
/// How long to wait for a finished command's output pipes to close: a command that left a
/// background process holding them must not hang the caller.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(1);
const POLL_INTERVAL_MIN: Duration = Duration::from_micros(200);
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(20);

/// `ip netns exec <netns> <args...>`: the command runs with the namespace's network and its
/// `/sys`. Stdin is null; stdout and stderr are left for the caller to set.
pub fn netns_command(netns: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// The command line as text, for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Whether raising the interrupt flag stops a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnInterrupt {
    Kill,
    /// Teardown: a Ctrl-C must not leave namespaces behind; the time limit still holds.
    Finish,
}

/// Runs `command` to completion with `stdin` fed to it, killing it if it outlives `limit` or
/// the interrupt flag is raised. Captures stdout and stderr; the exit status is not checked.
pub(crate) fn run_bounded(
    command: Command,
    stdin: Option<Vec<u8>>,
    limit: Duration,
) -> Result<Output, LabError> {
    run_bounded_with(command, stdin, limit, OnInterrupt::Kill)
}

fn run_bounded_with(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    limit: Duration,
    on_interrupt: OnInterrupt,
) -> Result<Output, LabError> {
    let description = describe(&command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| LabError::Spawn {
        command: description.clone(),
        source,
    })?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A writer thread, so that a child which prints while reading cannot deadlock us. A
        // write error means the child exited early; its status tells the caller why.
        thread::spawn(move || pipe.write_all(&bytes));
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, limit, &description, on_interrupt)?;
    Ok(Output {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    })
}

/// Runs `argv` and fails unless it exits successfully; returns its stdout.
pub(crate) fn run_checked(argv: &[String], limit: Duration) -> Result<String, LabError> {
    run_checked_with(argv, limit, OnInterrupt::Kill)
}

/// [`run_checked`], choosing what an interrupt does.
pub(crate) fn run_checked_with(
    argv: &[String],
    limit: Duration,
    on_interrupt: OnInterrupt,
) -> Result<String, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::invalid_argument("argv", "empty command line"))?;
    let mut command = Command::new(program);
    command.args(args);
    let description = describe(&command);
    let output = run_bounded_with(command, None, limit, on_interrupt)?;
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: description,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits for `child` up to `limit`, polling with a growing interval; kills it (it is our own
/// child, so its PID cannot have been reused before we reap it) on timeout or interrupt.
pub(crate) fn wait_bounded(
    child: &mut Child,
    limit: Duration,
    description: &str,
    on_interrupt: OnInterrupt,
) -> Result<ExitStatus, LabError> {
    let started = Instant::now();
    let mut poll_interval = POLL_INTERVAL_MIN;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(LabError::io(format!("waiting for `{description}`")))?
        {
            return Ok(status);
        }
        let elapsed = started.elapsed();
        let stop = if on_interrupt == OnInterrupt::Kill && interrupted() {
            Some(LabError::Interrupted)
        } else if elapsed >= limit {
            Some(LabError::CommandTimedOut {
                command: description.to_owned(),
                limit,
            })
        } else {
            None
        };
        if let Some(error) = stop {
            // Errors here mean the child already exited; either way it is reaped below.
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        thread::sleep(poll_interval.min(limit - elapsed));
        poll_interval = (poll_interval * 2).min(POLL_INTERVAL_MAX);
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(pipe) = pipe {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error leaves what was read so far, which is all the caller can get.
            let _ = pipe.take(OUTPUT_BYTES_MAX).read_to_end(&mut bytes);
            // The receiver is gone only if the caller gave up waiting; nothing left to do.
            let _ = sender.send(bytes);
        });
    }
    receiver
}

fn collect(receiver: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    receiver
        .recv_timeout(OUTPUT_DRAIN_LIMIT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn run_checked_returns_stdout_and_reports_failures() {
        let stdout = run_checked(&argv(&["sh", "-c", "echo hello"]), SETUP_COMMAND_TIME_LIMIT)
            .expect("sh runs");
        assert_eq!(stdout, "hello\n");
        let failure = run_checked(
            &argv(&["sh", "-c", "echo oops >&2; exit 3"]),
            SETUP_COMMAND_TIME_LIMIT,
        )
        .expect_err("exit 3 is a failure");
        let text = failure.to_string();
        assert!(
            text.contains("oops") && text.contains("exit status: 3"),
            "{text}"
        );
        assert!(run_checked(&[], SETUP_COMMAND_TIME_LIMIT).is_err());
    }

    #[test]
    fn run_bounded_feeds_stdin_and_kills_at_the_limit() {
        let output = run_bounded(
            Command::new("cat"),
            Some(b"abc".to_vec()),
            SETUP_COMMAND_TIME_LIMIT,
        )
        .expect("cat runs");
        assert_eq!(output.stdout, b"abc");

        let mut sleeper = Command::new("sleep");
        sleeper.arg("10");
        let started = Instant::now();
        let error = run_bounded(sleeper, None, Duration::from_millis(100)).expect_err("too slow");
        assert!(matches!(error, LabError::CommandTimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn missing_program_is_a_spawn_error_naming_it() {
        let error = run_checked(&argv(&["/nonexistent/tool"]), SETUP_COMMAND_TIME_LIMIT)
            .expect_err("no such program");
        assert!(
            matches!(error, LabError::Spawn { .. })
                && error.to_string().contains("/nonexistent/tool")
        );
    }

    #[test]
    fn netns_command_wraps_in_ip_netns_exec() {
        let command = netns_command("lab-1-0-c1", &["ping", "-c", "1"]);
        assert_eq!(describe(&command), "ip netns exec lab-1-0-c1 ping -c 1");
    }
}
