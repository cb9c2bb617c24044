//! UDP echo between two namespaces: numbered datagrams out, echoes compared byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::pattern::XorShift64;
use super::{deadline_from_now, is_timeout};
use crate::LabError;
use crate::address::ensure_lab_address;
use crate::interrupt::check_interrupted;
use crate::netns::in_netns;

pub const DATAGRAMS_MAX: u32 = 1_000_000;
/// Room for the sequence number.
pub const DATAGRAM_SIZE_MIN: usize = SEQUENCE_BYTES;
/// The largest UDP payload of an IPv4 packet (65535 - 20 - 8).
pub const DATAGRAM_SIZE_MAX: usize = 65_507;
const SEQUENCE_BYTES: usize = 4;
/// How long the client waits for one echo before counting the datagram as lost.
const ECHO_WAIT: Duration = Duration::from_millis(250);
/// How often the echo server wakes to check whether the client is done.
const SERVER_WAKE_INTERVAL: Duration = Duration::from_millis(50);
const RECEIVE_BUFFER_BYTES: usize = 65_536;
const PAYLOAD_SEED: u64 = 0x7564_702d_6563_686f;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpResult {
    pub sent: u32,
    /// Distinct datagrams whose echo came back (late echoes included, duplicates not).
    pub received: u32,
    /// No echo differed from its datagram, and none carried an unknown sequence number.
    pub bytes_match: bool,
}

impl UdpResult {
    /// Whether every datagram sent came back unchanged.
    pub fn all_echoed(&self) -> bool {
        self.sent > 0 && self.received == self.sent && self.bytes_match
    }
}

/// An echo server in `server_netns` on `server_addr:port` (port 0: any free port); a client in
/// `client_netns` sends `datagrams` datagrams of `size` bytes one at a time, each waiting up to
/// 250 ms for its echo. Stops sending at `deadline`.
pub fn udp_exchange(
    client_netns: &str,
    server_netns: &str,
    server_addr: IpAddr,
    port: u16,
    datagrams: u32,
    size: usize,
    deadline: Duration,
) -> Result<UdpResult, LabError> {
    ensure_lab_address(server_addr)?;
    if datagrams == 0 || datagrams > DATAGRAMS_MAX {
        return Err(LabError::invalid_argument(
            "datagrams",
            format!("{datagrams} is outside 1..={DATAGRAMS_MAX}"),
        ));
    }
    if !(DATAGRAM_SIZE_MIN..=DATAGRAM_SIZE_MAX).contains(&size) {
        return Err(LabError::invalid_argument(
            "size",
            format!("{size} is outside {DATAGRAM_SIZE_MIN}..={DATAGRAM_SIZE_MAX}"),
        ));
    }
    let until = deadline_from_now(deadline)?;
    let server =
        in_netns(server_netns, || UdpSocket::bind((server_addr, port)))?.map_err(LabError::io(
            format!("udp bind {server_addr} port {port} in {server_netns}"),
        ))?;
    let server_socket = server
        .local_addr()
        .map_err(LabError::io("udp server address"))?;
    let unspecified = match server_addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let client = in_netns(client_netns, || {
        let socket = UdpSocket::bind((unspecified, 0))?;
        socket.connect(server_socket)?;
        Ok::<_, std::io::Error>(socket)
    })?
    .map_err(LabError::io(format!(
        "udp client towards {server_socket} in {client_netns}"
    )))?;
    let client_done = AtomicBool::new(false);
    thread::scope(|scope| {
        let echo = scope.spawn(|| echo_until_done(&server, until, &client_done));
        let exchanged = exchange(&client, server_socket, datagrams, size, until);
        client_done.store(true, Ordering::SeqCst);
        echo.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        exchanged
    })
}

fn echo_until_done(
    socket: &UdpSocket,
    until: Instant,
    client_done: &AtomicBool,
) -> Result<(), LabError> {
    socket
        .set_read_timeout(Some(SERVER_WAKE_INTERVAL))
        .map_err(LabError::io("udp server read timeout"))?;
    let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
    while !client_done.load(Ordering::SeqCst) && Instant::now() < until {
        check_interrupted()?;
        match socket.recv_from(&mut buffer) {
            Ok((count, peer)) => {
                socket
                    .send_to(&buffer[..count], peer)
                    .map_err(LabError::io(format!("udp echo to {peer}")))?;
            }
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(LabError::io("udp server receive")(error)),
        }
    }
    Ok(())
}

fn exchange(
    socket: &UdpSocket,
    server: SocketAddr,
    datagrams: u32,
    size: usize,
    until: Instant,
) -> Result<UdpResult, LabError> {
    let mut echoed = vec![false; datagrams as usize];
    let mut result = UdpResult {
        sent: 0,
        received: 0,
        bytes_match: true,
    };
    let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
    for sequence in 0..datagrams {
        check_interrupted()?;
        if Instant::now() >= until {
            break;
        }
        let payload = datagram_payload(sequence, size);
        socket.send(&payload).map_err(LabError::io(format!(
            "udp send of datagram {sequence} to {server}"
        )))?;
        result.sent += 1;
        let echo_until = until.min(Instant::now() + ECHO_WAIT);
        while let Some(wait) = echo_until
            .checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
        {
            socket
                .set_read_timeout(Some(wait))
                .map_err(LabError::io("udp client read timeout"))?;
            let count = match socket.recv(&mut buffer) {
                Ok(count) => count,
                Err(error) if is_timeout(&error) => break,
                Err(error) => {
                    return Err(LabError::io(format!("udp receive from {server}"))(error));
                }
            };
            let echo = check_echo(&buffer[..count], result.sent, size);
            match echo {
                Some(echo_sequence) if !echoed[echo_sequence as usize] => {
                    echoed[echo_sequence as usize] = true;
                    result.received += 1;
                    if echo_sequence == sequence {
                        break;
                    }
                }
                Some(_duplicate) => {}
                None => result.bytes_match = false,
            }
        }
    }
    Ok(result)
}

/// The sequence number of a correct echo of one of the first `sent` datagrams; `None` for
/// anything else.
fn check_echo(echo: &[u8], sent: u32, size: usize) -> Option<u32> {
    let header: [u8; SEQUENCE_BYTES] = echo.get(..SEQUENCE_BYTES)?.try_into().ok()?;
    let sequence = u32::from_be_bytes(header);
    (sequence < sent && echo == datagram_payload(sequence, size).as_slice()).then_some(sequence)
}

/// The sequence number (big endian), then bytes that depend on it.
fn datagram_payload(sequence: u32, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size];
    payload[..SEQUENCE_BYTES].copy_from_slice(&sequence.to_be_bytes());
    XorShift64::new(PAYLOAD_SEED ^ u64::from(sequence)).fill(&mut payload[SEQUENCE_BYTES..]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_starts_with_its_sequence_and_differs_per_sequence() {
        let first = datagram_payload(1, 64);
        assert_eq!(first.len(), 64);
        assert_eq!(first[..4], [0, 0, 0, 1]);
        assert_ne!(first[4..], datagram_payload(2, 64)[4..]);
        assert_eq!(datagram_payload(7, 4), [0, 0, 0, 7]);
    }

    #[test]
    fn echo_check_accepts_only_exact_copies_of_sent_datagrams() {
        let echo = datagram_payload(3, 100);
        assert_eq!(check_echo(&echo, 4, 100), Some(3));
        assert_eq!(check_echo(&echo, 3, 100), None, "not sent yet");
        let mut corrupted = echo.clone();
        corrupted[50] ^= 1;
        assert_eq!(check_echo(&corrupted, 4, 100), None);
        assert_eq!(check_echo(&echo[..99], 4, 100), None, "truncated");
        assert_eq!(check_echo(&[0, 0], 4, 100), None);
    }
}
