//! The VFN router's configuration file: TOML in, validated typed structs out.
//!
//! Loading has two stages:
//! 1. serde/toml parsing checks syntax, value types and key names (unknown keys are errors);
//!    failures are [`ConfigError::Parse`], whose message gives the line, column and key.
//! 2. semantic validation checks ranges, uniqueness, address sanity, address families and cross
//!    references, and collects every problem into [`ConfigError::Invalid`], each naming its key
//!    by path, e.g. `ports[1].vlans[0].id: 4095 is out of range 1..=4094`.
//!
//! # Schema
//!
//! Sections `[dataplane]` (AF_XDP and worker loop), `[tables]` (table capacities) and `[icmp]`
//! (ICMP error rate limit) are optional, each key taking its default. `[workers]` (the cores
//! to pin one worker each to) and at least one `[[ports]]` are required. A port has an
//! interface, addresses and optional `[[ports.vlans]]` sub-interfaces; `[[routes]]` are static
//! routes whose gateway must be on-link on some port or VLAN (or on the one named by
//! `interface`). Connected prefixes of different interfaces must not overlap.
//!
//! The reference is `examples/full.toml`, every key with its meaning, unit, range and default:
//!
//! ```toml
#![doc = include_str!("../examples/full.toml")]
//! ```

mod error;
mod model;
mod policy;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use error::{ConfigError, FieldError};
pub use model::{
    ApiConfig, ApiRole, ApiTls, ApiToken, CollectorConfig, Config, DEFAULT_PORT_MTU,
    DEFAULT_PORT_QUEUES, DataplaneConfig, FlowSteering, IcmpConfig, InterfaceRef, MetricsConfig,
    MirrorConfig, MirrorDestinationConfig, MirrorDirection, MirrorSessionConfig, PortConfig,
    RouteConfig, RpFilter, ScoringAction, ScoringConfig, StateConfig, TableConfig, TelemetryConfig,
    ThreatWeightsConfig, VlanConfig, WithoutPolicy, WorkerConfig, XdpMode, ZeroCopy,
};
pub use policy::{PolicySource, load_policy_file, parse_prefix, policy_to_toml, rate_limit_spec};

/// Largest configuration file [`Config::load`] reads, so that a wrong path (a disk image, a
/// device) fails fast instead of exhausting memory.
pub const CONFIG_FILE_SIZE_MAX: u64 = 64 * 1024 * 1024;

impl Config {
    /// Parses and validates a configuration.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text)?;
        validate::validate(&raw)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_bounded(path.as_ref())?)
    }

    /// Checks a configuration built in code against the same rules as a parsed file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(&raw::RawConfig::from(self)).map(drop)
    }

    /// Writes the configuration as TOML, every key explicit (defaults included).
    ///
    /// A valid configuration parses back to an equal one.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(&raw::RawConfig::from(self))
            .expect("the file-shaped structs use only types TOML can represent")
    }
}

/// Reads a text file of at most [`CONFIG_FILE_SIZE_MAX`] bytes.
pub(crate) fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_SIZE_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > CONFIG_FILE_SIZE_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            limit_bytes: CONFIG_FILE_SIZE_MAX,
        });
    }
    Ok(text)
}
