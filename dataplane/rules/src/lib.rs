//! The VFN's segmentation rules: the model ([`model`]), its compiler ([`compile()`]), which
//! validates a whole set and refuses it with every error named, and the compiled, immutable
//! [`RuleSet`] the workers classify packets with. No I/O, no serde: the config file and the API
//! map their formats onto [`model`].

pub mod compile;
pub mod model;
mod prefix;
pub mod ruleset;

pub use compile::{CompileError, CompileLimits, Context, RuleError, compile};
pub use model::*;
pub use ruleset::{CompiledRule, Decision, RuleSet};
pub use vfn_classify::Key;
#[cfg(test)]
mod tests;
