//! Flow records for the tests, every field with a value of its own so that a field written in the
//! place of another shows.

use std::net::{Ipv4Addr, Ipv6Addr};

use vfn_ipfix::{
    DirectionStats, FlowAddresses, FlowEndReason, FlowExport, ShortText, Summary, TcpFlagCounts,
};

pub const START_MS: u64 = 1_700_000_000_123;

pub fn record_v4() -> FlowExport {
    FlowExport {
        addresses: FlowAddresses::V4 {
            source: Ipv4Addr::new(198, 18, 0, 1),
            destination: Ipv4Addr::new(198, 19, 7, 9),
        },
        source_port: 40001,
        destination_port: 443,
        protocol: 6,
        ingress_interface: 3,
        egress_interface: 5,
        flow_start_ms: START_MS,
        flow_end_ms: START_MS + 4_321,
        end_reason: FlowEndReason::EndOfFlowDetected,
        tcp_control_bits: 0x1b,
        tcp_flag_counts: TcpFlagCounts {
            fin: 2,
            syn: 3,
            rst: 4,
            psh: 5,
            ack: 6,
            urg: 7,
            ece: 8,
            cwr: 9,
        },
        forward: DirectionStats {
            octets: 10_000,
            packets: 11,
            packet_length: summary(40, 1500, 909.5, 12.25),
            inter_arrival_us: summary(13, 14_000, 1_500.5, 15.75),
            initial_tcp_window: Some(64_240),
        },
        reverse: DirectionStats {
            octets: 20_000,
            packets: 21,
            packet_length: summary(52, 1400, 952.25, 22.5),
            inter_arrival_us: summary(23, 24_000, 2_400.25, 25.125),
            initial_tcp_window: None,
        },
        inter_arrival_us: summary(31, 32_000, 3_200.5, 33.5),
        active_us: summary(41, 42_000, 4_200.5, 43.5),
        idle_us: summary(51, 52_000, 5_200.5, 53.5),
        rule_id: ShortText::new("allow-web").expect("a short id"),
        rule_set_version: ShortText::new("2024-06-01.3").expect("a short version"),
    }
}

pub fn record_v6() -> FlowExport {
    FlowExport {
        addresses: FlowAddresses::V6 {
            source: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1),
            destination: Ipv6Addr::new(0x2001, 2, 0, 7, 0, 0, 0, 9),
        },
        protocol: 17,
        source_port: 5353,
        destination_port: 53,
        tcp_control_bits: 0,
        end_reason: FlowEndReason::IdleTimeout,
        rule_id: ShortText::new("dns").expect("a short id"),
        ..record_v4()
    }
}

pub fn summary(min: u64, max: u64, mean: f64, std_dev: f64) -> Summary {
    Summary {
        min,
        max,
        mean,
        std_dev,
    }
}
