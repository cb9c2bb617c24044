//! `vfn-perf mirror`: what mirroring costs the in-memory pipeline (issue 7). One worker on one
//! core forwards 64-byte UDP frames of 1,000 flows under a one-rule policy that selects every
//! packet: the rule allows (nothing mirrored), or mirrors every packet to an ERSPAN II session
//! (the analyzer behind the gateway, so each copy is encapsulated, routed and sent by the same
//! port as the traffic) copying the frames as received, or both as received and as sent. Flow
//! telemetry off, so that the rows differ by the copies alone. The cost of a copy is the
//! difference in time per packet divided by the copies per packet.

use vfn_dataplane::mirror::{MirrorDestination, MirrorDirection, MirrorSession, Tunnel};
use vfn_rules::{Action, DefaultAction, Protocol, RuleSetSpec, RuleSpec};

use crate::pipeline::{ComparisonArgs, Measurement, Setup, measure, median_min_max};

/// The configurations: a name, and the session direction (`None`: the rule only allows).
const CONFIGURATIONS: [(&str, Option<MirrorDirection>); 3] = [
    ("nothing mirrored (the rule allows)", None),
    (
        "every packet mirrored as received (ERSPAN)",
        Some(MirrorDirection::Received),
    ),
    (
        "every packet mirrored as received and as sent (ERSPAN)",
        Some(MirrorDirection::Both),
    ),
];

fn session(direction: MirrorDirection) -> MirrorSession {
    MirrorSession {
        name: "analyzer".into(),
        direction,
        destination: MirrorDestination::Remote {
            tunnel: Tunnel::ErspanII { session_id: 1 },
            // The router's address on p1, and an analyzer behind its gateway.
            source: "198.18.128.1".parse().expect("constant"),
            remote: "198.19.9.9".parse().expect("constant"),
        },
        snap_length: 0,
        sample_every: 1,
        packets_per_second: 0,
        queue: 4096,
    }
}

fn policy(mirror: bool) -> RuleSetSpec {
    let action = if mirror {
        Action::Mirror {
            session: "analyzer".into(),
            then_allow: true,
        }
    } else {
        Action::Allow
    };
    RuleSetSpec {
        version: "mirror-benchmark".into(),
        default_action: DefaultAction::Allow,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            ..RuleSpec::new("all-udp", action)
        }],
        ..RuleSetSpec::default()
    }
}

fn run_once(
    args: &ComparisonArgs,
    direction: Option<MirrorDirection>,
) -> Result<Measurement, String> {
    let spec = policy(direction.is_some());
    measure(Setup {
        mirror_sessions: direction.map(session).into_iter().collect(),
        ..args.setup(Some(&spec), false)
    })
}

pub fn run(args: &ComparisonArgs) -> Result<(), String> {
    args.pin();
    println!(
        "in-memory pipeline, IPv4 UDP 64 B frames, {} flows, one rule, telemetry off, 1 worker on core {}, {} rounds of {} s",
        args.flows, args.core, args.rounds, args.seconds
    );
    // Per configuration, per round: (Mpps, copies per forwarded packet, ns per packet).
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); CONFIGURATIONS.len()];
    for round in 0..args.rounds.max(1) {
        for offset in 0..CONFIGURATIONS.len() {
            let index = (round + offset) % CONFIGURATIONS.len();
            let measured = run_once(args, CONFIGURATIONS[index].1)?;
            let per_packet = measured.mirror_copies as f64 / measured.forwarded.max(1) as f64;
            let ns = measured.elapsed.as_nanos() as f64 / measured.forwarded.max(1) as f64;
            results[index].push((measured.mpps(), per_packet, ns));
        }
    }
    println!(
        "| configuration | Mpps median | min | max | copies per packet | ns per packet | ns per copy (median of rounds) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (index, (name, _)) in CONFIGURATIONS.iter().enumerate() {
        let (mpps, min, max) = median_min_max(results[index].iter().map(|r| r.0).collect());
        let (copies, _, _) = median_min_max(results[index].iter().map(|r| r.1).collect());
        let (ns, _, _) = median_min_max(results[index].iter().map(|r| r.2).collect());
        let per_copy = if index == 0 {
            "".to_string()
        } else {
            // Each round against the same round's unmirrored run.
            let costs = results[index]
                .iter()
                .zip(&results[0])
                .map(|(mirrored, plain)| (mirrored.2 - plain.2) / mirrored.1.max(f64::EPSILON))
                .collect();
            format!("{:.0}", median_min_max(costs).0)
        };
        println!(
            "| {name} | {mpps:.2} | {min:.2} | {max:.2} | {copies:.2} | {ns:.0} | {per_copy} |"
        );
    }
    Ok(())
}
