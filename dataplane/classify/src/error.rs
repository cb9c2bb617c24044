//! Why an entry list or a set of limits was refused. Plain data: nothing is allocated to build
//! the error; the message is formatted only when displayed.

use std::fmt;

/// An entry list that cannot become a classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The list holds more entries than `Limits::max_entries`.
    TooManyEntries { count: usize, max_entries: usize },
    /// A range of entry `entry_index` (its position in the slice given to `build`) has
    /// `lo > hi`, so it could never match.
    EmptyRange {
        entry_index: usize,
        field: &'static str,
    },
    /// A field of `Limits` is outside what the classifier supports.
    InvalidLimit {
        field: &'static str,
        value: usize,
        max: usize,
    },
    /// The structure would need more than `Limits::max_memory_bytes`.
    MemoryLimit {
        needed_bytes: usize,
        max_memory_bytes: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyEntries { count, max_entries } => write!(
                f,
                "{count} classifier entries exceed the limit of {max_entries}"
            ),
            Self::EmptyRange { entry_index, field } => write!(
                f,
                "entry {entry_index}: the {field} range is empty (lo > hi)"
            ),
            Self::InvalidLimit { field, value, max } => write!(
                f,
                "classifier limit {field} = {value} is outside the supported range 1..={max}"
            ),
            Self::MemoryLimit {
                needed_bytes,
                max_memory_bytes,
            } => write!(
                f,
                "the classifier needs more than {needed_bytes} bytes, above the limit of {max_memory_bytes} (max_memory_bytes)"
            ),
        }
    }
}

impl std::error::Error for BuildError {}
