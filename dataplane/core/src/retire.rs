//! Retirement of tables replaced under the workers' feet.
//!
//! A worker loads a published table once per burst through an `arc-swap` guard; when the writer
//! swaps in a new one, a worker in mid-burst may hold the old one. Were the writer to drop its
//! reference at once, that worker could hold the last one and free the table on the packet path.
//! So the writer keeps each replaced table for [`RETIRE_AFTER`], far longer than any burst
//! (microseconds), and frees it itself. The same bound already lets the neighbour table reuse a
//! freed slot after one second (`neigh.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// How long a replaced table is kept by its writer.
pub const RETIRE_AFTER: Duration = Duration::from_secs(1);

/// Replaced tables, oldest first, each with the time it was replaced.
#[derive(Debug)]
pub struct Retired<T> {
    held: VecDeque<(Arc<T>, Duration)>,
}

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Retired {
            held: VecDeque::new(),
        }
    }
}

impl<T> Retired<T> {
    /// Keeps `replaced`, replaced at `now`.
    pub fn hold(&mut self, replaced: Arc<T>, now: Duration) {
        self.held.push_back((replaced, now));
    }

    /// Frees the tables replaced at least [`RETIRE_AFTER`] before `now`.
    pub fn release_due(&mut self, now: Duration) {
        while self
            .held
            .front()
            .is_some_and(|(_, since)| now >= *since + RETIRE_AFTER)
        {
            self.held.pop_front();
        }
    }

    /// Tables still held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_table_outlives_the_last_reader_by_the_retirement_time() {
        let mut retired = Retired::default();
        let table = Arc::new(7u32);
        let reader = Arc::downgrade(&table);
        retired.hold(table, Duration::from_secs(10));
        retired.release_due(Duration::from_millis(10_999));
        assert_eq!(retired.len(), 1);
        assert!(reader.upgrade().is_some(), "still held");
        retired.release_due(Duration::from_secs(11));
        assert!(retired.is_empty());
        assert!(reader.upgrade().is_none(), "freed by the writer");
    }
}
