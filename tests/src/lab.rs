//! A lab instance on the machine: created from a [`TopologySpec`], removed on drop.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};

use crate::LabError;
use crate::command::{describe, netns_command};
use crate::setup::{SystemRunner, TeardownRunner, delete_namespaces, execute, setup_plan};
use crate::topology::{LabInstance, Topology, TopologySpec};

/// Numbers the labs of this process, so that their names differ.
static LAB_SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// How long a [`ChildGuard`] waits after SIGTERM before it sends SIGKILL.
pub const CHILD_TERMINATION_GRACE: Duration = Duration::from_secs(3);
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Namespaces and links built from a [`TopologySpec`]. Dropping it deletes every namespace it
/// made (and with them their veths), reporting failures on stderr; [`Lab::destroy`] returns them.
#[derive(Debug)]
pub struct Lab {
    topology: Topology,
    /// Namespaces that exist and are ours to delete; emptied by [`Lab::destroy`].
    namespaces: Vec<String>,
}

impl Lab {
    /// Builds the lab; needs root. On failure, whatever was already made is removed again.
    pub fn create(spec: &TopologySpec) -> Result<Self, LabError> {
        let euid = geteuid();
        if !euid.is_root() {
            return Err(LabError::NotRoot {
                euid: euid.as_raw(),
            });
        }
        let instance = LabInstance {
            pid: std::process::id(),
            sequence: LAB_SEQUENCE.fetch_add(1, Ordering::Relaxed),
        };
        let topology = spec.resolve(instance)?;
        let plan = setup_plan(&topology);
        let mut lab = Self {
            topology,
            namespaces: Vec::new(),
        };
        // On error, dropping `lab` deletes the namespaces made so far.
        execute(&plan, &mut SystemRunner, &mut lab.namespaces)?;
        Ok(lab)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The namespace of a host role, or of [`crate::ROUTER_ROLE`].
    pub fn netns(&self, role: &str) -> Result<&str, LabError> {
        self.topology.netns(role)
    }

    /// A command that runs `args` inside the namespace of `role` (see [`netns_command`]).
    pub fn exec(&self, role: &str, args: &[&str]) -> Result<Command, LabError> {
        Ok(netns_command(self.netns(role)?, args))
    }

    /// Starts `command` inside the namespace of `role`, guarded so that it is stopped on drop.
    /// Program, arguments, environment and working directory are taken from `command`; its
    /// stdio settings cannot be read back from a `Command`, so stdin is null and stdout and
    /// stderr are inherited. For other stdio, configure [`Lab::exec`]'s command and pass it to
    /// [`ChildGuard::spawn`].
    pub fn spawn_in(&self, role: &str, command: Command) -> Result<ChildGuard, LabError> {
        let mut wrapped = netns_command(self.netns(role)?, &[]);
        wrapped.arg(command.get_program()).args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(directory) = command.get_current_dir() {
            wrapped.current_dir(directory);
        }
        wrapped.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        ChildGuard::spawn(wrapped)
    }

    /// Deletes the lab's namespaces, reporting every failure.
    pub fn destroy(mut self) -> Result<(), LabError> {
        let errors = self.delete_namespaces();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown {
                errors: errors.iter().map(ToString::to_string).collect(),
            })
        }
    }

    fn delete_namespaces(&mut self) -> Vec<LabError> {
        let namespaces = std::mem::take(&mut self.namespaces);
        delete_namespaces(&namespaces, &mut TeardownRunner)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for error in self.delete_namespaces() {
            eprintln!("vfn-lab {}: cleanup: {error}", self.topology.name);
        }
    }
}

/// A child process that is stopped when the guard is dropped: SIGTERM to its PID, up to
/// [`CHILD_TERMINATION_GRACE`] to exit, then SIGKILL to that PID only.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    description: String,
}

impl ChildGuard {
    pub fn spawn(mut command: Command) -> Result<Self, LabError> {
        let description = describe(&command);
        let child = command.spawn().map_err(|source| LabError::Spawn {
            command: description.clone(),
            source,
        })?;
        Ok(Self { child, description })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// For the child's piped stdio.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, LabError> {
        self.child
            .try_wait()
            .map_err(LabError::io(format!("checking on `{}`", self.description)))
    }

    /// Stops the child as on drop, and returns how it ended.
    pub fn stop(mut self) -> Result<ExitStatus, LabError> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<ExitStatus, LabError> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let pid = i32::try_from(self.child.id()).map_err(|_| {
            LabError::invalid_argument("pid", format!("{} does not fit a pid_t", self.child.id()))
        })?;
        // The child is not reaped yet, so its PID still names it and no other process.
        match kill(Pid::from_raw(pid), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(LabError::Sys {
                    context: format!("SIGTERM to `{}` ({pid})", self.description),
                    source,
                });
            }
        }
        let started = Instant::now();
        while started.elapsed() < CHILD_TERMINATION_GRACE {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            thread::sleep(CHILD_POLL_INTERVAL);
        }
        self.child.kill().map_err(LabError::io(format!(
            "SIGKILL to `{}` ({pid})",
            self.description
        )))?;
        self.child.wait().map_err(LabError::io(format!(
            "reaping `{}` ({pid})",
            self.description
        )))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(error) = self.terminate() {
            eprintln!("vfn-lab: stopping `{}`: {error}", self.description);
        }
    }
}
