//! A hashed timer wheel of flow nodes, walked a bounded number of steps at a time.
//!
//! Time is cut into ticks of 2^[`TICK_NS_LOG2`] ns (about 1 ms); slot `tick % SLOT_COUNT` holds
//! the nodes scheduled in that tick or in a later lap. A cursor walks the ticks up to the current
//! one; each [`TimerWheel::step`] yields one node of the cursor's slot or moves the cursor by one
//! tick, so the caller bounds the work by counting steps. A node's schedule is a lower bound of
//! its real deadline, which the caller checks exactly when the node is yielded.
//!
//! Nodes `0..node_count` are the caller's; the slots' sentinels follow them in the same arena.

use crate::links::LinkArena;

/// Tick length: 2^20 ns = 1.05 ms.
pub(crate) const TICK_NS_LOG2: u32 = 20;
/// Slot count: one lap is 2^16 ticks = 68.7 s, longer than the default UDP and ICMP timeouts,
/// so most flows are visited only once or twice.
pub(crate) const SLOT_COUNT: u32 = 1 << 16;

pub(crate) enum WheelStep {
    /// A node of the cursor's slot, already left behind by the walk: the caller expires it,
    /// [`TimerWheel::reschedule_visited`] it, or removes it.
    Visit(u32),
    /// The cursor's slot was done and the cursor moved to the next tick.
    NextTick,
    /// Every node scheduled up to now was yielded.
    CaughtUp,
}

pub(crate) struct TimerWheel {
    links: LinkArena,
    first_sentinel: u32,
    cursor_tick: u64,
    /// Next node to yield in the cursor's slot; `None` starts the slot from its front.
    resume: Option<u32>,
}

fn tick_of(time_ns: u64) -> u64 {
    time_ns >> TICK_NS_LOG2
}

impl TimerWheel {
    /// A wheel for nodes `0..node_count` (`node_count + SLOT_COUNT` fits `u32`, checked by the
    /// caller).
    pub(crate) fn new(node_count: u32) -> Self {
        Self {
            links: LinkArena::new(node_count + SLOT_COUNT),
            first_sentinel: node_count,
            cursor_tick: 0,
            resume: None,
        }
    }

    /// Bytes allocated for the wheel (a link per node and per slot).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.links.memory_bytes()
    }

    fn sentinel(&self, tick: u64) -> u32 {
        // The remainder is below SLOT_COUNT, a u32.
        self.first_sentinel + (tick % u64::from(SLOT_COUNT)) as u32
    }

    /// Moves the cursor to `now_ns`. Only for an empty wheel, which has nothing to walk.
    pub(crate) fn restart_at(&mut self, now_ns: u64) {
        self.cursor_tick = tick_of(now_ns);
        self.resume = None;
    }

    /// Schedules the unscheduled `node` at `deadline_ns`; a deadline behind the cursor (a clock
    /// that went backwards) is treated as the cursor's tick.
    pub(crate) fn schedule(&mut self, node: u32, deadline_ns: u64) {
        let sentinel = self.sentinel(tick_of(deadline_ns).max(self.cursor_tick));
        self.links.push_front(sentinel, node);
    }

    /// Moves the node just yielded by [`TimerWheel::step`] to `deadline_ns`, which is later than
    /// the time given to that step. A node whose new slot is the cursor's stays where it is: the
    /// walk of this slot has passed it and the next lap or the next walk of this tick sees it.
    pub(crate) fn reschedule_visited(&mut self, node: u32, deadline_ns: u64) {
        if self.sentinel(tick_of(deadline_ns)) != self.sentinel(self.cursor_tick) {
            self.cancel(node);
            self.schedule(node, deadline_ns);
        }
    }

    /// Whether `node` is scheduled: true from [`TimerWheel::schedule`] to
    /// [`TimerWheel::cancel`], including while [`TimerWheel::step`] yields it.
    pub(crate) fn is_scheduled(&self, node: u32) -> bool {
        self.links.is_linked(node)
    }

    /// Unschedules `node`.
    pub(crate) fn cancel(&mut self, node: u32) {
        if self.resume == Some(node) {
            self.resume = Some(self.links.next(node));
        }
        self.links.unlink(node);
    }

    /// One unit of walking work up to `now_ns`.
    pub(crate) fn step(&mut self, now_ns: u64) -> WheelStep {
        let now_tick = tick_of(now_ns);
        if self.cursor_tick > now_tick {
            return WheelStep::CaughtUp;
        }
        let lap = u64::from(SLOT_COUNT);
        if now_tick - self.cursor_tick >= lap {
            // One lap visits every slot, so older ticks need no separate walk.
            self.cursor_tick = now_tick - (lap - 1);
            self.resume = None;
        }
        let sentinel = self.sentinel(self.cursor_tick);
        let node = self.resume.unwrap_or_else(|| self.links.next(sentinel));
        if node == sentinel {
            self.resume = None;
            if self.cursor_tick == now_tick {
                // The current tick is not over: its nodes are walked again by the next call.
                return WheelStep::CaughtUp;
            }
            self.cursor_tick += 1;
            return WheelStep::NextTick;
        }
        self.resume = Some(self.links.next(node));
        WheelStep::Visit(node)
    }

    /// The first node of the cursor's slot: the slot whose nodes are the most overdue.
    pub(crate) fn cursor_slot_front(&self) -> Option<u32> {
        self.node_or_end(self.links.next(self.sentinel(self.cursor_tick)))
    }

    /// The node after `node` in its slot.
    pub(crate) fn next_in_slot(&self, node: u32) -> Option<u32> {
        self.node_or_end(self.links.next(node))
    }

    fn node_or_end(&self, node: u32) -> Option<u32> {
        (node < self.first_sentinel).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK_NS: u64 = 1 << TICK_NS_LOG2;

    fn walk(wheel: &mut TimerWheel, now_ns: u64, budget: usize) -> (Vec<u32>, bool) {
        let mut visited = Vec::new();
        for _ in 0..budget {
            match wheel.step(now_ns) {
                WheelStep::Visit(node) => visited.push(node),
                WheelStep::NextTick => {}
                WheelStep::CaughtUp => return (visited, true),
            }
        }
        (visited, false)
    }

    #[test]
    fn yields_nodes_once_their_tick_starts() {
        let mut wheel = TimerWheel::new(4);
        wheel.restart_at(0);
        wheel.schedule(0, 3 * TICK_NS + 5);
        wheel.schedule(1, TICK_NS);
        assert_eq!(walk(&mut wheel, TICK_NS - 1, 100), (vec![], true));
        let (visited, caught_up) = walk(&mut wheel, TICK_NS, 100);
        assert_eq!((visited, caught_up), (vec![1], true));
        wheel.cancel(1);
        assert_eq!(walk(&mut wheel, 3 * TICK_NS, 100), (vec![0], true));
    }

    #[test]
    fn current_tick_is_walked_again_until_it_ends() {
        let mut wheel = TimerWheel::new(4);
        wheel.restart_at(0);
        wheel.schedule(0, 10);
        assert_eq!(walk(&mut wheel, 5, 100), (vec![0], true));
        assert_eq!(walk(&mut wheel, 10, 100), (vec![0], true));
        wheel.cancel(0);
        assert_eq!(walk(&mut wheel, 10, 100), (vec![], true));
    }

    #[test]
    fn a_late_cursor_walks_at_most_one_lap() {
        let mut wheel = TimerWheel::new(4);
        wheel.restart_at(0);
        wheel.schedule(2, TICK_NS);
        let far = 10 * u64::from(SLOT_COUNT) * TICK_NS;
        let (visited, caught_up) = walk(&mut wheel, far, SLOT_COUNT as usize + 2);
        assert_eq!((visited, caught_up), (vec![2], true));
    }

    #[test]
    fn cancelling_the_resume_node_keeps_the_walk_going() {
        let mut wheel = TimerWheel::new(4);
        wheel.restart_at(0);
        for node in 0..3 {
            wheel.schedule(node, 0);
        }
        let (first, _) = walk(&mut wheel, 0, 1);
        assert_eq!(first, [2]);
        wheel.cancel(1);
        assert_eq!(walk(&mut wheel, 0, 100), (vec![0], true));
    }
}
