//! Per-flow statistics: the cold record a flow table keeps beside each hot entry.
//!
//! Every value is a running one (counts, sums, Welford's mean and variance, min and max): no
//! packet is stored, and recording a packet costs a few additions however long the flow. Names
//! and definitions follow CICFlowMeter where it has the feature; `docs/flows.md` maps them.

use crate::key::Direction;
use crate::tcp::TcpFlags;

/// Count, mean, variance, min and max of a series of values in constant space (Welford's online
/// algorithm: numerically stable, no stored samples).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunningStats {
    count: u64,
    mean: f64,
    /// Sum of squared differences from the current mean.
    m2: f64,
    min: u64,
    max: u64,
}

impl RunningStats {
    pub fn add(&mut self, value: u64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        let value = value as f64;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value; 0 when there is none.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// The largest value; 0 when there is none.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// 0 when there is no value.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The sample variance (divided by `count - 1`, as CICFlowMeter's Apache Commons Math
    /// statistics do); 0 for fewer than two values.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        self.m2 / (self.count - 1) as f64
    }

    /// The sample standard deviation, the square root of [`RunningStats::variance`].
    pub fn std_dev(&self) -> f64 {
        self.variance().sqrt()
    }
}

/// How many packets carried each TCP flag (saturating at `u32::MAX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlagCounts {
    pub fin: u32,
    pub syn: u32,
    pub rst: u32,
    pub psh: u32,
    pub ack: u32,
    pub urg: u32,
    pub ece: u32,
    pub cwr: u32,
}

impl TcpFlagCounts {
    /// The counts in the order of the flags' bits in the header byte, FIN (bit 0) to CWR.
    fn in_bit_order(&mut self) -> [&mut u32; 8] {
        [
            &mut self.fin,
            &mut self.syn,
            &mut self.rst,
            &mut self.psh,
            &mut self.ack,
            &mut self.urg,
            &mut self.ece,
            &mut self.cwr,
        ]
    }

    fn add(&mut self, flags: TcpFlags) {
        let byte = flags.header_byte();
        if byte == 0 {
            return;
        }
        for (bit, count) in self.in_bit_order().into_iter().enumerate() {
            *count = count.saturating_add(u32::from(byte >> bit & 1));
        }
    }

    /// The flags at least one packet carried.
    pub fn seen(mut self) -> TcpFlags {
        let byte = self
            .in_bit_order()
            .into_iter()
            .enumerate()
            .fold(0u8, |byte, (bit, count)| byte | u8::from(*count > 0) << bit);
        TcpFlags::from_header_byte(byte)
    }

    /// The counts of `self` and `other` added.
    pub fn sum(mut self, mut other: TcpFlagCounts) -> TcpFlagCounts {
        for (count, more) in self.in_bit_order().into_iter().zip(other.in_bit_order()) {
            *count = count.saturating_add(*more);
        }
        self
    }
}

/// One packet as the statistics see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSample {
    /// Nanoseconds on the table's monotonic clock.
    pub time_ns: u64,
    pub direction: Direction,
    /// The IP packet's length: IPv4 total length, IPv6 payload length + 40 (the fixed header).
    /// Link-layer headers, VLAN tags and Ethernet padding do not count.
    pub ip_length: u32,
    /// The TCP header's flags; [`TcpFlags::NONE`] for other protocols.
    pub tcp_flags: TcpFlags,
    /// The TCP header's window field as sent (not scaled); `None` for other protocols.
    pub tcp_window: Option<u16>,
    /// The interface (the caller's numbering) the initiator's packets leave by: a forward
    /// packet's egress, or a reply's ingress.
    pub initiator_egress: u16,
}

/// The statistics of one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirectionStats {
    lengths: RunningStats,
    bytes: u64,
    inter_arrival: RunningStats,
    last_ns: u64,
    flag_counts: TcpFlagCounts,
    initial_window: Option<u16>,
}

impl DirectionStats {
    pub fn packets(&self) -> u64 {
        self.lengths.count()
    }

    /// The sum of the packets' IP lengths ([`PacketSample::ip_length`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The packets' IP lengths, in bytes.
    pub fn lengths(&self) -> &RunningStats {
        &self.lengths
    }

    /// The gaps between consecutive packets of this direction, in nanoseconds (one fewer than
    /// the packets).
    pub fn inter_arrival(&self) -> &RunningStats {
        &self.inter_arrival
    }

    /// How many packets carried each TCP flag.
    pub fn flag_counts(&self) -> &TcpFlagCounts {
        &self.flag_counts
    }

    /// Every TCP flag any packet carried (the OR of their flags bytes).
    pub fn flags(&self) -> TcpFlags {
        self.flag_counts.seen()
    }

    /// The TCP window field of this direction's first packet in the record; `None` for other
    /// protocols or no packet.
    pub fn initial_window(&self) -> Option<u16> {
        self.initial_window
    }

    fn record(&mut self, packet: &PacketSample, now_ns: u64) {
        if self.packets() == 0 {
            self.initial_window = packet.tcp_window;
        } else {
            self.inter_arrival.add(now_ns - self.last_ns);
        }
        self.last_ns = now_ns;
        self.lengths.add(u64::from(packet.ip_length));
        self.bytes += u64::from(packet.ip_length);
        self.flag_counts.add(packet.tcp_flags);
    }
}

/// The statistics of one record of a flow: its packets since the record started (the flow's
/// first packet, or the first after the previous record ended).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowStats {
    forward: DirectionStats,
    reverse: DirectionStats,
    inter_arrival: RunningStats,
    active: RunningStats,
    idle: RunningStats,
    first_ns: u64,
    last_ns: u64,
    active_start_ns: u64,
    initiator_egress: u16,
}

impl FlowStats {
    /// A word from each cache line a packet's update writes, for [`crate::FlowTable::warm`].
    #[inline]
    pub(crate) fn touch(&self) -> u64 {
        self.forward.lengths.count
            ^ self.forward.last_ns
            ^ self.reverse.lengths.count
            ^ self.reverse.last_ns
            ^ self.inter_arrival.count
            ^ self.idle.count
            ^ self.last_ns
    }

    /// Whether the record has no packet yet.
    pub fn is_empty(&self) -> bool {
        self.packets() == 0
    }

    pub fn packets(&self) -> u64 {
        self.forward.packets() + self.reverse.packets()
    }

    pub fn bytes(&self) -> u64 {
        self.forward.bytes() + self.reverse.bytes()
    }

    /// The initiator's packets.
    pub fn forward(&self) -> &DirectionStats {
        &self.forward
    }

    /// The replies.
    pub fn reverse(&self) -> &DirectionStats {
        &self.reverse
    }

    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::Forward => &self.forward,
            Direction::Reverse => &self.reverse,
        }
    }

    /// Time of the record's first packet; 0 when empty.
    pub fn first_ns(&self) -> u64 {
        self.first_ns
    }

    /// Time of the record's last packet; 0 when empty.
    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }

    pub fn duration_ns(&self) -> u64 {
        self.last_ns - self.first_ns
    }

    /// The gaps between consecutive packets of either direction, in nanoseconds.
    pub fn inter_arrival(&self) -> &RunningStats {
        &self.inter_arrival
    }

    /// The active periods, in nanoseconds: spans of packets none more than the activity timeout
    /// apart, from the first packet of the span to its last. Spans of one instant (a lone
    /// packet) do not count, as in CICFlowMeter. The period still open is included.
    pub fn active_periods(&self) -> RunningStats {
        let mut periods = self.active;
        let open = self.last_ns - self.active_start_ns;
        if open > 0 {
            periods.add(open);
        }
        periods
    }

    /// The idle periods, in nanoseconds: the gaps longer than the activity timeout.
    pub fn idle_periods(&self) -> &RunningStats {
        &self.idle
    }

    /// How many packets of either direction carried each TCP flag.
    pub fn flag_counts(&self) -> TcpFlagCounts {
        self.forward.flag_counts.sum(self.reverse.flag_counts)
    }

    /// Every TCP flag any packet of either direction carried.
    pub fn flags(&self) -> TcpFlags {
        self.forward.flags() | self.reverse.flags()
    }

    /// [`PacketSample::initiator_egress`] of the record's last packet.
    pub fn initiator_egress(&self) -> u16 {
        self.initiator_egress
    }

    /// Adds a packet; a gap longer than `activity_timeout_ns` closes an active period and counts
    /// as an idle one. A packet older than the last one counts as simultaneous with it.
    pub fn record(&mut self, packet: &PacketSample, activity_timeout_ns: u64) {
        let now_ns = packet.time_ns.max(self.last_ns);
        if self.is_empty() {
            self.first_ns = now_ns;
            self.active_start_ns = now_ns;
        } else {
            let gap = now_ns - self.last_ns;
            self.inter_arrival.add(gap);
            if gap > activity_timeout_ns {
                let active = self.last_ns - self.active_start_ns;
                if active > 0 {
                    self.active.add(active);
                }
                self.idle.add(gap);
                self.active_start_ns = now_ns;
            }
        }
        self.last_ns = now_ns;
        self.initiator_egress = packet.initiator_egress;
        match packet.direction {
            Direction::Forward => self.forward.record(packet, now_ns),
            Direction::Reverse => self.reverse.record(packet, now_ns),
        }
    }
}

const _: () = assert!(
    size_of::<FlowStats>() <= 7 * 64,
    "a flow's statistics take at most seven cache lines (bytes per flow are documented)"
);

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn sample(time_ns: u64, direction: Direction, ip_length: u32) -> PacketSample {
        PacketSample {
            time_ns,
            direction,
            ip_length,
            tcp_flags: TcpFlags::NONE,
            tcp_window: None,
            initiator_egress: 1,
        }
    }

    #[test]
    fn running_stats_match_the_textbook_formulas() {
        let mut stats = RunningStats::default();
        for value in [2, 4, 4, 4, 5, 5, 7, 9] {
            stats.add(value);
        }
        assert_eq!((stats.count(), stats.min(), stats.max()), (8, 2, 9));
        assert_eq!(stats.mean(), 5.0);
        // Sum of squared deviations 32, over n - 1 = 7.
        assert!((stats.variance() - 32.0 / 7.0).abs() < 1e-12);
        assert!((stats.std_dev() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn running_stats_of_one_value_have_no_spread() {
        let mut stats = RunningStats::default();
        stats.add(40);
        assert_eq!((stats.min(), stats.max(), stats.mean()), (40, 40, 40.0));
        assert_eq!(stats.std_dev(), 0.0);
        assert_eq!(RunningStats::default().std_dev(), 0.0);
    }

    #[test]
    fn flag_counts_count_each_bit() {
        let mut counts = TcpFlagCounts::default();
        counts.add(TcpFlags::from_header_byte(0xff));
        counts.add(TcpFlags::SYN | TcpFlags::ACK);
        counts.add(TcpFlags::NONE);
        let expected = TcpFlagCounts {
            fin: 1,
            syn: 2,
            rst: 1,
            psh: 1,
            ack: 2,
            urg: 1,
            ece: 1,
            cwr: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.sum(counts).syn, 4);
        let mut some = TcpFlagCounts::default();
        some.add(TcpFlags::SYN | TcpFlags::ECE);
        assert_eq!(some.seen(), TcpFlags::SYN | TcpFlags::ECE);
    }

    #[test]
    fn a_gap_beyond_the_activity_timeout_splits_active_periods() {
        let mut stats = FlowStats::default();
        let activity = 5 * SECOND;
        // Active 0..2 s, idle 2..10 s, active 10..11 s, idle 11..20 s, a lone packet at 20 s.
        for time in [0, 1, 2, 10, 11, 20] {
            stats.record(&sample(time * SECOND, Direction::Forward, 100), activity);
        }
        let active = stats.active_periods();
        assert_eq!(
            (active.count(), active.min(), active.max()),
            (2, SECOND, 2 * SECOND)
        );
        let idle = stats.idle_periods();
        assert_eq!(
            (idle.count(), idle.min(), idle.max()),
            (2, 8 * SECOND, 9 * SECOND)
        );
        assert_eq!(stats.duration_ns(), 20 * SECOND);
    }

    #[test]
    fn directions_keep_their_own_gaps_and_the_flow_all_of_them() {
        let mut stats = FlowStats::default();
        for (time, direction) in [
            (0, Direction::Forward),
            (10, Direction::Reverse),
            (30, Direction::Forward),
            (70, Direction::Reverse),
        ] {
            stats.record(&sample(time, direction, 60), SECOND);
        }
        assert_eq!(stats.forward().inter_arrival().mean(), 30.0);
        assert_eq!(stats.reverse().inter_arrival().mean(), 60.0);
        let all = stats.inter_arrival();
        assert_eq!((all.count(), all.min(), all.max()), (3, 10, 40));
        assert_eq!((stats.packets(), stats.bytes()), (4, 240));
    }
}
