//! The config's segmentation policy: loaded (inline or from its file), compiled against the
//! router's interfaces, published to the workers; again on SIGHUP, where a bad policy changes
//! nothing and the log says why.

use std::path::{Path, PathBuf};

use vfn_config::{Config, PolicySource};
use vfn_dataplane::iface::Interfaces;
use vfn_rules::{CompileLimits, Context, RuleSet, RuleSetSpec};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {source}")]
    File {
        path: String,
        source: vfn_config::ConfigError,
    },
    #[error("config {path}: {source}")]
    Config {
        path: String,
        source: vfn_config::ConfigError,
    },
    #[error("{0}")]
    Compile(#[from] vfn_rules::CompileError),
    #[error(
        "the reloaded config has no [policy]: refusing to switch filtering off (restart to run without a policy)"
    )]
    PolicyRemoved,
}

/// Where the policy of a config file is read from, relative paths taken from the config's folder.
pub fn policy_path(config_path: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_owned()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(file)
    }
}

/// The rule set `config` names, read from its file when it has one (none: `Ok(None)`).
pub fn load_spec(config: &Config, config_path: &Path) -> Result<Option<RuleSetSpec>, PolicyError> {
    match &config.policy {
        None => Ok(None),
        Some(PolicySource::Inline(spec)) => Ok(Some(spec.clone())),
        Some(PolicySource::File(file)) => {
            let path = policy_path(config_path, file);
            vfn_config::load_policy_file(&path)
                .map(Some)
                .map_err(|source| PolicyError::File {
                    path: path.display().to_string(),
                    source,
                })
        }
    }
}

/// Compiles `spec` against the router's interfaces and mirror sessions, logging what it built.
pub fn compile_spec(
    spec: &RuleSetSpec,
    interfaces: &Interfaces,
    mirror_sessions: &[String],
    limits: &CompileLimits,
) -> Result<RuleSet, vfn_rules::CompileError> {
    let lookup = |name: &str| interfaces.by_name(name);
    let sessions = |name: &str| session_index(mirror_sessions, name);
    let context = Context {
        interface: &lookup,
        mirror_session: &sessions,
    };
    let rules = vfn_rules::compile(spec, &context, limits)?;
    tracing::info!(
        version = %rules.version,
        rules = rules.rules.len(),
        entries = rules.entry_count,
        build_ms = rules.build_time.as_secs_f64() * 1e3,
        memory_bytes = rules.memory_bytes(),
        "rule set compiled"
    );
    Ok(rules)
}

/// The index of the session called `name` among `names`.
fn session_index(names: &[String], name: &str) -> Option<u16> {
    names
        .iter()
        .position(|n| n == name)
        .and_then(|i| u16::try_from(i).ok())
}

/// The names of `config`'s mirror sessions, by index (as the router numbers them).
pub fn mirror_session_names(config: &Config) -> Vec<String> {
    config
        .mirror
        .sessions
        .iter()
        .map(|session| session.name.clone())
        .collect()
}

/// Compiles the policy `config` names (none: `Ok(None)`), for replay.
pub fn compile(
    config: &Config,
    config_path: &Path,
    interfaces: &Interfaces,
) -> Result<Option<RuleSet>, PolicyError> {
    let Some(spec) = load_spec(config, config_path)? else {
        return Ok(None);
    };
    Ok(Some(compile_spec(
        &spec,
        interfaces,
        &mirror_session_names(config),
        &CompileLimits::default(),
    )?))
}

/// Compiles the policy of `config` against the interface names the config declares, for `vfn
/// check`; returns a summary (empty without a policy).
pub fn check(config: &Config, config_path: &Path) -> Result<String, PolicyError> {
    let names: Vec<String> = config
        .ports
        .iter()
        .flat_map(|port| {
            std::iter::once(port.name.clone()).chain(
                port.vlans
                    .iter()
                    .map(move |vlan| format!("{}.{}", port.name, vlan.id)),
            )
        })
        .collect();
    let Some(spec) = load_spec(config, config_path)? else {
        return Ok(String::new());
    };
    let lookup = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .and_then(|i| u16::try_from(i).ok())
    };
    let session_names = mirror_session_names(config);
    let sessions = |name: &str| session_index(&session_names, name);
    let rules = vfn_rules::compile(
        &spec,
        &Context {
            interface: &lookup,
            mirror_session: &sessions,
        },
        &CompileLimits::default(),
    )?;
    Ok(format!(
        "; policy {:?}: {} rules, {} classifier entries, built in {:.1} ms, {} bytes",
        rules.version,
        rules.rules.len(),
        rules.entry_count,
        rules.build_time.as_secs_f64() * 1e3,
        rules.memory_bytes()
    ))
}

/// Re-reads the config file's policy (SIGHUP). A config without a policy is refused: a reload
/// never switches filtering off.
pub fn reload(config_path: &Path) -> Result<RuleSetSpec, PolicyError> {
    let config = Config::load(config_path).map_err(|source| PolicyError::Config {
        path: config_path.display().to_string(),
        source,
    })?;
    load_spec(&config, config_path)?.ok_or(PolicyError::PolicyRemoved)
}
