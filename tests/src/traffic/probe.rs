//! Whether a TCP connection gets through (or is refused, or times out), and a paced one-way UDP
//! stream counted at the receiver: what segmentation tests observe.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use super::{deadline_from_now, is_timeout};
use crate::LabError;
use crate::address::ensure_lab_address;
use crate::interrupt::check_interrupted;
use crate::netns::in_netns;

/// How a TCP connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed.
    Connected,
    /// A reset came back (a closed port, or a rule that rejects).
    Refused,
    /// Nothing came back before the timeout (a rule that drops).
    TimedOut,
    /// Another ICMP error came back (host or net unreachable, administratively prohibited).
    Unreachable,
}

/// Listens on `server_addr:port` in `server_netns` (unless `listen` is false: then the port is
/// closed there) and connects from `client_netns`, waiting at most `timeout`.
pub fn tcp_connect(
    client_netns: &str,
    server_netns: &str,
    server_addr: IpAddr,
    port: u16,
    listen: bool,
    timeout: Duration,
) -> Result<Connect, LabError> {
    ensure_lab_address(server_addr)?;
    deadline_from_now(timeout)?;
    let _listener = if listen {
        Some(
            in_netns(server_netns, || TcpListener::bind((server_addr, port)))?.map_err(
                LabError::io(format!(
                    "tcp listen on {server_addr} port {port} in {server_netns}"
                )),
            )?,
        )
    } else {
        None
    };
    let target = SocketAddr::new(server_addr, port);
    let outcome = in_netns(client_netns, || {
        TcpStream::connect_timeout(&target, timeout)
    })?;
    Ok(match outcome {
        Ok(_) => Connect::Connected,
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Connect::Refused,
        Err(error) if is_timeout(&error) => Connect::TimedOut,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
            ) =>
        {
            Connect::Unreachable
        }
        // EACCES / EPERM: ICMP administratively prohibited.
        Err(error)
            if error
                .raw_os_error()
                .is_some_and(|e| e == 13 || e == 1 || e == 113) =>
        {
            Connect::Unreachable
        }
        Err(error) => {
            return Err(LabError::io(format!(
                "tcp connect to {target} from {client_netns}"
            ))(error));
        }
    })
}

/// A UDP stream's outcome at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodResult {
    pub sent: u64,
    pub received: u64,
    /// How long the sender sent.
    pub elapsed: Duration,
}

/// Largest rate [`udp_flood`] paces.
pub const FLOOD_RATE_MAX: u64 = 200_000;

/// Sends 64-byte UDP datagrams from `client_netns` to `server_addr:port` at `rate` per second for
/// `duration`, paced every millisecond, and counts what a socket in `server_netns` receives until
/// half a second after the last one.
pub fn udp_flood(
    client_netns: &str,
    server_netns: &str,
    server_addr: IpAddr,
    port: u16,
    rate: u64,
    duration: Duration,
) -> Result<FloodResult, LabError> {
    ensure_lab_address(server_addr)?;
    if rate == 0 || rate > FLOOD_RATE_MAX {
        return Err(LabError::invalid_argument(
            "rate",
            format!("{rate} is outside 1..={FLOOD_RATE_MAX}"),
        ));
    }
    const DRAIN: Duration = Duration::from_millis(500);
    deadline_from_now(duration + DRAIN)?;
    let receiver =
        in_netns(server_netns, || UdpSocket::bind((server_addr, port)))?.map_err(LabError::io(
            format!("udp bind {server_addr} port {port} in {server_netns}"),
        ))?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(LabError::io("udp read timeout"))?;
    let sender = in_netns(client_netns, || {
        UdpSocket::bind((
            if server_addr.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ))
    })?
    .map_err(LabError::io(format!("udp bind in {client_netns}")))?;
    let target = SocketAddr::new(server_addr, port);
    thread::scope(|scope| {
        let counting = scope.spawn(|| {
            let mut received = 0u64;
            let mut buf = [0u8; 2048];
            let mut quiet_since: Option<Instant> = None;
            let hard_stop = Instant::now() + duration + DRAIN + Duration::from_secs(2);
            while Instant::now() < hard_stop {
                match receiver.recv(&mut buf) {
                    Ok(_) => {
                        received += 1;
                        quiet_since = None;
                    }
                    Err(error) if is_timeout(&error) => {
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= DRAIN && received > 0 {
                            break;
                        }
                    }
                    Err(error) => return Err(LabError::io("udp receive")(error)),
                }
            }
            Ok(received)
        });
        let payload = [0x5au8; 64];
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            check_interrupted()?;
            // Catch up to the rate every millisecond.
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                match sender.send_to(&payload, target) {
                    Ok(_) => sent += 1,
                    // A full socket buffer: try again at the next millisecond.
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.raw_os_error() == Some(105) => break, // ENOBUFS
                    Err(error) => return Err(LabError::io("udp send")(error)),
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        let elapsed = started.elapsed();
        let received = counting
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(FloodResult {
            sent,
            received,
            elapsed,
        })
    })
}
