//! Why a table could not be built or a flow not inserted. Plain data, nothing allocated.

use std::time::Duration;

/// A [`crate::FlowTable`] configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum NewTableError {
    #[error("flow table capacity {requested} is out of range: it must be 1 to {max} flows")]
    CapacityOutOfRange { requested: usize, max: usize },
    #[error(
        "flow timeout `{field}` of {timeout:?} is out of range: it must be more than zero and at \
         most {max:?}",
        max = crate::TIMEOUT_MAX
    )]
    TimeoutOutOfRange {
        field: &'static str,
        timeout: Duration,
    },
    #[error("cannot draw the flow table's hash key from the operating system: {0}")]
    Randomness(getrandom::Error),
}

/// Why [`crate::FlowTable::insert`] did not insert the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The table is full and no flow may be evicted (see the crate documentation's full-table
    /// policy): the caller counts it and handles the packet without flow state.
    #[error("flow table full: every flow is established and active")]
    TableFull,
    /// The key is already in the table: insert is for flows that [`crate::FlowTable::get_mut`]
    /// did not find.
    #[error("flow already in the table")]
    AlreadyPresent,
}
