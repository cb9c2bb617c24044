//! Named network namespaces (`ip netns`): entering one from a thread, listing, deleting, and
//! clearing what crashed runs left behind.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::LabError;
use crate::setup::{TeardownRunner, delete_namespaces};
use crate::topology::creator_pid;

/// Where `ip netns add` bind-mounts the namespaces it names.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";
/// Bounds the directory scan of [`list_namespaces`].
const NAMESPACES_LISTED_MAX: usize = 100_000;

/// Runs `task` on a fresh thread that has first joined network namespace `netns`, and returns
/// its result. Sockets made inside `task` stay in that namespace for their whole life, wherever
/// they are used afterwards. Only the network namespace changes: files and `/sys` are still the
/// caller's. A panic in `task` is resumed in the caller.
pub fn in_netns<T: Send>(netns: &str, task: impl FnOnce() -> T + Send) -> Result<T, LabError> {
    let path = netns_path(netns)?;
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name(format!("netns {netns}"))
            .spawn_scoped(scope, || {
                enter_netns(&path)?;
                Ok(task())
            })
            .map_err(LabError::io(format!(
                "starting a thread for namespace {netns}"
            )))?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn enter_netns(path: &Path) -> Result<(), LabError> {
    let file = File::open(path).map_err(LabError::io(format!("opening {}", path.display())))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Sys {
        context: format!("setns into {}", path.display()),
        source,
    })
}

fn netns_path(netns: &str) -> Result<PathBuf, LabError> {
    let well_formed = !netns.is_empty() && netns != "." && netns != ".." && !netns.contains('/');
    if !well_formed {
        return Err(LabError::invalid_argument(
            "netns",
            format!("{netns:?} is not a namespace name"),
        ));
    }
    Ok(Path::new(NETNS_RUN_DIR).join(netns))
}

/// The names of all named network namespaces (empty if none was ever made).
pub fn list_namespaces() -> Result<Vec<String>, LabError> {
    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(LabError::io(format!("listing {NETNS_RUN_DIR}"))(error)),
    };
    let mut names = Vec::new();
    for entry in entries.take(NAMESPACES_LISTED_MAX) {
        let entry = entry.map_err(LabError::io(format!("listing {NETNS_RUN_DIR}")))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Deletes the namespaces named `<prefix>-<pid>-...` whose creating process no longer runs,
/// left by a crashed run, so that a new run starts clean. Returns the names it deleted.
pub fn remove_stale(prefix: &str) -> Result<Vec<String>, LabError> {
    let stale = stale_namespaces(prefix, list_namespaces()?, process_exists);
    let errors = delete_namespaces(&stale, &mut TeardownRunner);
    if !errors.is_empty() {
        return Err(LabError::Teardown {
            errors: errors.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(stale)
}

fn stale_namespaces(
    prefix: &str,
    names: Vec<String>,
    process_exists: impl Fn(u32) -> bool,
) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| creator_pid(prefix, name).is_some_and(|pid| !process_exists(pid)))
        .collect()
}

/// Signal 0 checks existence without sending anything. When unsure, the process counts as
/// existing, so that a namespace in use is never deleted.
fn process_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    kill(Pid::from_raw(raw), None) != Err(Errno::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_namespaces_are_those_of_dead_creators_with_the_prefix() {
        let names = [
            "vfnlab-100-0-c1",
            "vfnlab-100-0-vfn",
            "vfnlab-200-3-srv",
            "vfnlabx-100-0-c1",
            "other-100-0-c1",
            "vfnlab-0-0-c1",
            "vfnlab--0-c1",
            "vfnlab-12a-0-c1",
            "vfnlab-100",
        ]
        .map(str::to_owned)
        .to_vec();
        let alive = |pid| pid == 200;
        assert_eq!(
            stale_namespaces("vfnlab", names, alive),
            ["vfnlab-100-0-c1", "vfnlab-100-0-vfn"]
        );
    }

    #[test]
    fn this_process_exists_and_namespace_names_are_checked() {
        assert!(process_exists(std::process::id()));
        assert!(netns_path("../etc").is_err());
        assert!(netns_path("").is_err());
        assert!(netns_path("..").is_err());
        assert_eq!(
            netns_path("lab-1-0-c1").expect("plain name"),
            Path::new("/var/run/netns/lab-1-0-c1")
        );
    }
}
