//! A one-way TCP transfer of pseudo-random bytes between two namespaces, checked by hash.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::pattern::{Fnv1a64, XorShift64};
use super::{deadline_from_now, is_timeout, time_left};
use crate::LabError;
use crate::address::ensure_lab_address;
use crate::interrupt::check_interrupted;
use crate::netns::in_netns;

pub const TRANSFER_BYTES_MAX: usize = 1 << 30;
/// Both ends generate the same stream from this seed.
const TRANSFER_SEED: u64 = 0x5646_4e2d_6c61_6221;
/// Divisible by 8, so the pseudo-random stream does not depend on how it is cut.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often blocked socket calls wake to check the deadline, interrupts and the other side.
const WAKE_INTERVAL: Duration = Duration::from_millis(50);

const _: () = assert!(CHUNK_BYTES.is_multiple_of(8));

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferResult {
    pub bytes_sent: usize,
    pub bytes_received: usize,
    /// FNV-1a 64 of what the client sent.
    pub sent_hash: u64,
    /// FNV-1a 64 of what the server received.
    pub received_hash: u64,
    pub elapsed: Duration,
}

impl TransferResult {
    /// Whether the server received exactly what the client sent.
    pub fn is_intact(&self) -> bool {
        self.bytes_received == self.bytes_sent && self.received_hash == self.sent_hash
    }
}

/// A listener in `server_netns` on `server_addr:port` (port 0: any free port), a client in
/// `client_netns` that connects and sends `bytes` pseudo-random bytes, then closes. The server
/// counts and hashes what arrives until the client closes. Everything ends by `deadline`.
pub fn tcp_transfer(
    client_netns: &str,
    server_netns: &str,
    server_addr: IpAddr,
    port: u16,
    bytes: usize,
    deadline: Duration,
) -> Result<TransferResult, LabError> {
    ensure_lab_address(server_addr)?;
    if bytes > TRANSFER_BYTES_MAX {
        return Err(LabError::invalid_argument(
            "bytes",
            format!("{bytes} is above {TRANSFER_BYTES_MAX}"),
        ));
    }
    let started = Instant::now();
    let until = deadline_from_now(deadline)?;
    let listener = in_netns(server_netns, || TcpListener::bind((server_addr, port)))?.map_err(
        LabError::io(format!(
            "tcp listen on {server_addr} port {port} in {server_netns}"
        )),
    )?;
    let server_socket = listener
        .local_addr()
        .map_err(LabError::io("tcp listener address"))?;
    let client_gave_up = AtomicBool::new(false);
    thread::scope(|scope| {
        let server = scope.spawn(|| receive_all(&listener, until, deadline, &client_gave_up));
        let sent = send_all(client_netns, server_socket, bytes, until, deadline);
        if sent.is_err() {
            client_gave_up.store(true, Ordering::SeqCst);
        }
        let received = server
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (bytes_sent, sent_hash) = sent?;
        let (bytes_received, received_hash) = received?;
        Ok(TransferResult {
            bytes_sent,
            bytes_received,
            sent_hash,
            received_hash,
            elapsed: started.elapsed(),
        })
    })
}

/// Connects from `client_netns` and sends the stream; returns the count and hash sent.
fn send_all(
    client_netns: &str,
    server: SocketAddr,
    bytes: usize,
    until: Instant,
    deadline: Duration,
) -> Result<(usize, u64), LabError> {
    let connect_limit = time_left(until, "tcp connect", deadline)?;
    let mut stream = in_netns(client_netns, || {
        TcpStream::connect_timeout(&server, connect_limit)
    })?
    .map_err(LabError::io(format!(
        "tcp connect to {server} from {client_netns}"
    )))?;
    let mut generator = XorShift64::new(TRANSFER_SEED);
    let mut hash = Fnv1a64::new();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut sent = 0;
    while sent < bytes {
        check_interrupted()?;
        let piece = &mut chunk[..CHUNK_BYTES.min(bytes - sent)];
        generator.fill(piece);
        stream
            .set_write_timeout(Some(time_left(until, "tcp send", deadline)?))
            .map_err(LabError::io("tcp write timeout"))?;
        stream.write_all(piece).map_err(LabError::io(format!(
            "tcp send to {server} after {sent} bytes"
        )))?;
        hash.update(piece);
        sent += piece.len();
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(LabError::io("tcp close for writing"))?;
    Ok((sent, hash.finish()))
}

/// Accepts one connection and reads it to the end; returns the count and hash received.
fn receive_all(
    listener: &TcpListener,
    until: Instant,
    deadline: Duration,
    client_gave_up: &AtomicBool,
) -> Result<(usize, u64), LabError> {
    let mut stream = accept_one(listener, until, deadline, client_gave_up)?;
    let mut hash = Fnv1a64::new();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut received = 0;
    loop {
        check_interrupted()?;
        let what = format!("tcp end of stream (after {received} bytes received)");
        let wait = time_left(until, &what, deadline)?.min(WAKE_INTERVAL);
        stream
            .set_read_timeout(Some(wait))
            .map_err(LabError::io("tcp read timeout"))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok((received, hash.finish())),
            Ok(count) => {
                hash.update(&chunk[..count]);
                received += count;
            }
            Err(error) if is_timeout(&error) => {}
            Err(error) => {
                return Err(LabError::io(format!("tcp receive after {received} bytes"))(
                    error,
                ));
            }
        }
    }
}

fn accept_one(
    listener: &TcpListener,
    until: Instant,
    deadline: Duration,
    client_gave_up: &AtomicBool,
) -> Result<TcpStream, LabError> {
    while !client_gave_up.load(Ordering::SeqCst) {
        check_interrupted()?;
        let wait = time_left(until, "tcp accept", deadline)?.min(WAKE_INTERVAL);
        let mut readable = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
        match poll(&mut readable, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(source) => {
                return Err(LabError::Sys {
                    context: "poll on the tcp listener".to_owned(),
                    source,
                });
            }
        }
        let (stream, _) = listener.accept().map_err(LabError::io("tcp accept"))?;
        return Ok(stream);
    }
    Err(LabError::Timeout {
        what: "tcp accept (the client failed first)".to_owned(),
        limit: deadline,
    })
}
