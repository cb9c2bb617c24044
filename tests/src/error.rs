//! The one error type of the crate: every variant names what failed and why.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology specification is inconsistent; nothing was created.
    #[error("invalid topology: {field}: {reason}")]
    InvalidSpec { field: String, reason: String },

    /// A traffic primitive or helper got an argument outside its bounds.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: &'static str, reason: String },

    /// A role was asked for that the lab does not have.
    #[error("no namespace with role {role:?} in this lab (known roles: {known})")]
    UnknownRole { role: String, known: String },

    /// The safety rail: lab traffic goes only to 198.18.0.0/15 and 2001:2::/48.
    #[error("{address} is outside the lab ranges 198.18.0.0/15 and 2001:2::/48; refusing to send")]
    AddressOutsideLab { address: IpAddr },

    /// Network namespaces need CAP_SYS_ADMIN; the lab runs as root.
    #[error("the lab needs root (creating network namespaces); effective uid is {euid}")]
    NotRoot { euid: u32 },

    /// An external tool that a scenario runs is not installed.
    #[error("`{program}` not found; install {package}: apt-get install {package}")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },

    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },

    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },

    /// A command outlived its time limit and was killed.
    #[error("`{command}` did not finish within {limit:?} and was killed")]
    CommandTimedOut { command: String, limit: Duration },

    #[error("unexpected output from `{command}`: {reason}; output: {output:?}")]
    UnexpectedOutput {
        command: String,
        reason: String,
        output: String,
    },

    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },

    /// A bounded wait ran out of time.
    #[error("{what} did not happen within {limit:?}")]
    Timeout { what: String, limit: Duration },

    /// The interrupt flag (see [`crate::install_interrupt_flag`]) was raised.
    #[error("interrupted by a signal")]
    Interrupted,

    /// [`crate::Lab::destroy`] could not remove everything.
    #[error("lab teardown failed: {}", .errors.join("; "))]
    Teardown { errors: Vec<String> },
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn invalid_argument(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}
