//! Packet capture on the router in memory: frames as received and as sent, the filter, the snap
//! length, a full buffer pool, stopping, and one capture at a time.

mod common;

use std::time::Duration;

use common::*;
use vfn_dataplane::capture::{
    CAPTURE_FRAMES_PER_WORKER, CaptureDirection, CaptureError, CaptureFilter, CaptureSession,
    CaptureSpec, CapturedFrame, FrameDirection,
};
use vfn_dataplane::wire::{self, PROTO_UDP};

fn spec(port: u16, direction: CaptureDirection, filter: CaptureFilter) -> CaptureSpec {
    CaptureSpec {
        port,
        direction,
        filter,
        snap_len: 0,
    }
}

/// Starts capturing every frame of `port` in `direction`.
fn capture_all(bench: &Bench, port: u16, direction: CaptureDirection) -> CaptureSession {
    let every_frame = spec(port, direction, CaptureFilter::default());
    bench
        .router
        .capture_hub()
        .start(every_frame)
        .expect("starts")
}

fn drain(session: &mut CaptureSession) -> Vec<CapturedFrame> {
    std::iter::from_fn(|| session.try_next()).collect()
}

#[test]
fn both_directions_show_the_frame_as_received_and_as_sent() {
    let mut bench = Bench::new();
    client_resolves_router(&mut bench);
    let mut session = capture_all(&bench, 0, CaptureDirection::Both);
    let request = udp(CLIENT, SERVER, 1000, 53);
    let [_, out1] = bench.exchange(0, &request);
    assert_eq!(out1.len(), 1, "forwarded");
    let reply = udp(SERVER, CLIENT, 53, 1000);
    let [out0, _] = bench.exchange(1, &reply);
    assert_eq!(out0.len(), 1, "the reply forwarded to the client");

    let frames = drain(&mut session);
    let now_ns = bench.now.as_nanos() as u64;
    assert_eq!(
        frames,
        [
            CapturedFrame {
                time_ns: now_ns,
                port: 0,
                direction: FrameDirection::Received,
                original_len: request.len() as u32,
                data: request.clone(),
            },
            CapturedFrame {
                time_ns: now_ns,
                port: 0,
                direction: FrameDirection::Sent,
                original_len: out0[0].len() as u32,
                data: out0[0].clone(),
            },
        ],
        "port 1 is not captured"
    );
    let sent = &frames[1].data;
    assert_eq!((&sent[0..6], &sent[6..12]), (&CLIENT_MAC[..], &P0_MAC[..]));
    assert_eq!(sent[14 + wire::ipv4::TTL], 63, "TTL decremented");
    assert_eq!(reply[14 + wire::ipv4::TTL], 64);
    assert_eq!(session.frames_lost(), 0);
    bench.assert_balanced();
}

#[test]
fn frames_the_router_writes_itself_are_captured_as_sent() {
    let mut bench = Bench::new();
    let mut session = capture_all(&bench, 0, CaptureDirection::Sent);
    let [arp_reply, _] = client_resolves_router(&mut bench);
    let [time_exceeded, _] = bench.exchange(0, &udp_to(SERVER, 1));
    let sent: Vec<_> = drain(&mut session).into_iter().map(|f| f.data).collect();
    assert_eq!(
        sent,
        [arp_reply[0].clone(), time_exceeded[0].clone()],
        "the slow path's ARP reply, the worker's ICMP error"
    );
    assert_eq!(&sent[0][12..14], &[0x08, 0x06]);
    assert_eq!(sent[1][14 + wire::ipv4::PROTOCOL], 1);
}

#[test]
fn the_filter_selects_by_host_protocol_and_port() {
    let mut bench = Bench::new();
    let filter = CaptureFilter {
        host: Some("198.19.0.0/24".parse().expect("prefix")),
        protocol: Some(PROTO_UDP),
        port: Some(53),
    };
    let mut session = bench
        .router
        .capture_hub()
        .start(spec(0, CaptureDirection::Received, filter))
        .expect("starts");
    client_resolves_router(&mut bench);
    for frame in [
        udp(CLIENT, SERVER, 1000, 53),
        udp(CLIENT, SERVER, 1000, 54),
        udp(CLIENT, [198, 19, 1, 1], 1000, 53),
        udp(CLIENT, SERVER, 53, 2000),
    ] {
        bench.exchange(0, &frame);
    }
    let kept: Vec<_> = drain(&mut session)
        .iter()
        .map(|f| {
            (
                wire::read_u16(&f.data, 14 + 20),
                wire::read_u16(&f.data, 14 + 22),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [(1000, 53), (53, 2000)],
        "no ARP, no port 54, no other host"
    );
}

#[test]
fn the_snap_length_keeps_the_first_bytes_and_is_bounded_by_the_frame() {
    let mut bench = Bench::new();
    let hub = bench.router.capture_hub();
    let huge = hub
        .start(CaptureSpec {
            snap_len: 1 << 20,
            ..spec(0, CaptureDirection::Received, CaptureFilter::default())
        })
        .expect("starts");
    assert_eq!(huge.spec().snap_len, 2048, "MemIo's frame size");
    drop(huge);
    let mut session = hub
        .start(CaptureSpec {
            snap_len: 20,
            ..spec(0, CaptureDirection::Received, CaptureFilter::default())
        })
        .expect("starts");
    let frame = udp(CLIENT, SERVER, 1000, 53);
    bench.exchange(0, &frame);
    let captured = session.try_next().expect("captured");
    assert_eq!(captured.data, &frame[..20]);
    assert_eq!(captured.original_len, frame.len() as u32);
}

#[test]
fn a_full_pool_counts_losses_and_forwarding_goes_on() {
    let mut bench = Bench::new();
    let mut session = capture_all(&bench, 0, CaptureDirection::Received);
    let total = CAPTURE_FRAMES_PER_WORKER + 76;
    let mut forwarded = 0;
    for batch in 0..total.div_ceil(100) {
        let frames = (batch * 100..total.min(batch * 100 + 100)).map(|i| {
            let mut frame = udp_to(SERVER, 64);
            frame[14 + 20..14 + 22].copy_from_slice(&(i as u16).to_be_bytes());
            frame
        });
        for frame in frames {
            bench.worker.io_mut().inject(0, &frame).expect("room");
        }
        forwarded += bench.settle()[1].len();
    }
    assert_eq!(forwarded, total, "every frame forwarded");
    assert_eq!(session.frames_lost(), 76);
    let captured = drain(&mut session);
    assert_eq!(captured.len(), CAPTURE_FRAMES_PER_WORKER);
    let sources: Vec<_> = captured
        .iter()
        .map(|f| wire::read_u16(&f.data, 14 + 20))
        .collect();
    assert_eq!(
        sources,
        (0..CAPTURE_FRAMES_PER_WORKER as u16).collect::<Vec<_>>(),
        "the first frames, in order"
    );
    // Read buffers are free again.
    bench.exchange(0, &udp_to(SERVER, 64));
    assert_eq!(drain(&mut session).len(), 1);
    assert_eq!(session.frames_lost(), 76);
    bench.assert_balanced();
}

#[test]
fn one_capture_at_a_time_and_dropping_it_stops_it() {
    let mut bench = Bench::new();
    let hub = bench.router.capture_hub();
    let first = capture_all(&bench, 1, CaptureDirection::Both);
    let refused = hub
        .start(spec(0, CaptureDirection::Both, CaptureFilter::default()))
        .expect_err("one runs");
    assert_eq!(refused, CaptureError::AlreadyRunning { port: 1 });
    assert!(refused.to_string().contains("already runs"), "{refused}");
    assert_eq!(
        hub.start(spec(2, CaptureDirection::Both, CaptureFilter::default()))
            .expect_err("no port 2"),
        CaptureError::NoSuchPort {
            port: 2,
            port_count: 2
        }
    );
    drop(first);
    // Not captured: no capture runs.
    bench.exchange(0, &udp_to(SERVER, 64));
    let mut second = hub
        .start(spec(1, CaptureDirection::Sent, CaptureFilter::default()))
        .expect("the first stopped");
    assert_eq!(second.try_next(), None, "nothing from before the start");
    let [_, out1] = bench.exchange(0, &udp_to(SERVER, 64));
    assert_eq!(
        second
            .next_timeout(Duration::from_millis(10))
            .map(|f| f.data),
        Some(out1[0].clone())
    );
    second.stop();
    bench.exchange(0, &udp_to(SERVER, 64));
    bench.assert_balanced();
}
