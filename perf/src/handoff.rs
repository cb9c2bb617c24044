//! `vfn-perf handoff`: what handing packets to the worker that owns their flow costs
//! (`dataplane/core/src/handoff.rs`). Two workers of the in-memory pipeline polled in turn by one
//! thread on one core, all traffic arriving at the first (as when a NIC's queue gets both
//! directions of flows another worker owns): with `flow_steering = "handoff"` the first hands the
//! packets of the flows the second owns to it (about half: the owner is a hash of the address
//! pair), with `"nic"` it processes everything itself. Flow telemetry is on in both (the flow
//! table is what needs the handoff). Both run on the same core, so the difference in time per
//! packet is the handoff's own work: the copies into and out of a slot, the queue operations,
//! and the second worker's loop; divided by the packets handed off, the cost of one.

use crate::pipeline::{ComparisonArgs, Measurement, Setup, measure, median_min_max};
use vfn_dataplane::handoff::FlowSteering;

fn run_once(args: &ComparisonArgs, steering: FlowSteering) -> Result<Measurement, String> {
    measure(Setup {
        two_workers: Some(steering),
        ..args.setup(None, true)
    })
}

pub fn run(args: &ComparisonArgs) -> Result<(), String> {
    args.pin();
    println!(
        "in-memory pipeline, IPv4 UDP 64 B frames, {} flows, telemetry on, 2 workers polled by one thread on core {}, {} rounds of {} s",
        args.flows, args.core, args.rounds, args.seconds
    );
    let mut local_mpps = Vec::new();
    let mut handoff_mpps = Vec::new();
    let mut handed_share = Vec::new();
    let mut cost_ns = Vec::new();
    for round in 0..args.rounds.max(1) {
        let (local, handoff) = if round % 2 == 0 {
            let local = run_once(args, FlowSteering::Nic)?;
            (local, run_once(args, FlowSteering::Handoff)?)
        } else {
            let handoff = run_once(args, FlowSteering::Handoff)?;
            (run_once(args, FlowSteering::Nic)?, handoff)
        };
        if local.handed_off != 0 || handoff.handed_off == 0 {
            return Err(format!(
                "handed off {} packets without handoff and {} with it",
                local.handed_off, handoff.handed_off
            ));
        }
        let ns_per_packet = |m: &Measurement| 1e3 / m.mpps();
        let share = handoff.handed_off as f64 / handoff.forwarded.max(1) as f64;
        local_mpps.push(local.mpps());
        handoff_mpps.push(handoff.mpps());
        handed_share.push(share);
        cost_ns.push((ns_per_packet(&handoff) - ns_per_packet(&local)) / share);
    }
    println!("| configuration | Mpps median | min | max |\n|---|--:|--:|--:|");
    for (name, values) in [
        ("one worker processes all (`nic`)", local_mpps),
        ("half handed to the other worker (`handoff`)", handoff_mpps),
    ] {
        let (median, min, max) = median_min_max(values);
        println!("| {name} | {median:.2} | {min:.2} | {max:.2} |");
    }
    let (share, _, _) = median_min_max(handed_share);
    let (cost, min, max) = median_min_max(cost_ns);
    println!(
        "handed off: {:.1} % of the packets; ns per handed packet: median {cost:.0} (min {min:.0}, max {max:.0})",
        share * 100.0
    );
    Ok(())
}
