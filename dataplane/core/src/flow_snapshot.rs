//! Copies of the workers' flow tables for the control side, taken by the workers themselves.
//!
//! A flow table belongs to its worker and is read by nobody else, so the control side asks and
//! each worker copies its own flows: [`FlowSnapshots::request`] hands every worker a record
//! buffer allocated on the control side; a worker notices the request at its next loop
//! iteration, copies up to [`FLOW_SLOTS_PER_POLL`] slots of its table per iteration (a cursor
//! walk, so a large table costs no single long pause), then hands the buffer back.
//! [`PendingSnapshot::wait`] gathers every worker's part.
//!
//! The worker allocates and frees nothing: it fills the buffer within the room it was given,
//! counts the flows beyond it, and sends it back on a channel the hub keeps for the router's
//! life (so the send never finds the receiver gone and leaves the buffer to be freed there).
//! One snapshot is taken at a time. One abandoned by its waiter is still finished by the
//! workers; its parts are thrown away by the control side when the next one is requested.
//!
//! The table changes while it is walked: a flow present for the whole walk is in the snapshot
//! once; one that starts or ends meanwhile may or may not be. Each record is as of its copy.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded};
use vfn_flow::{FlowCursor, FlowEntry, FlowStats, FlowTable, unmapped_address};

pub use vfn_flow::TcpState;

use crate::iface::IfIndex;
use crate::policy::{FlowVerdict, NO_RULE};

/// Slab slots of its flow table a worker copies per loop iteration at most (live or free; one
/// 64-byte entry each, read in order).
pub const FLOW_SLOTS_PER_POLL: usize = 4_096;

/// Requests a worker holds at most: one it is copying, one waiting behind it. Parts it has
/// returned wait in a channel of the same size, so its sends never find it full.
const PARTS_PER_WORKER: usize = 2;

/// One flow as its worker's table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub worker: usize,
    /// The flow as its initiator (the sender of its first packet) sent it.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP, UDP and SCTP ports; the identifier in both for ICMP echo; 0 for other protocols.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Nanoseconds since the router's epoch.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// [`TcpState::None`] for other protocols.
    pub tcp: TcpState,
    /// Whether a packet went in the reply direction.
    pub reply_seen: bool,
    /// The rule-set generation whose verdict the flow caches (it is judged again, by its next
    /// packet, under a newer one); 0 for a flow telemetry tracks without a rule set.
    pub generation: u32,
    /// The rule that allowed the flow; `None`: the rule set's default action.
    pub rule: Option<u32>,
    /// The interface the initiator's packets arrive on.
    pub ingress: IfIndex,
    /// Packets and IP bytes, both directions, of the flow's current record (since its last
    /// exported record; 0 with telemetry off).
    pub packets: u64,
    pub bytes: u64,
}

impl FlowRecord {
    /// What a buffer's records are written with on the control side (a worker number no worker
    /// has, so never all zeros).
    const UNFILLED: FlowRecord = FlowRecord {
        worker: usize::MAX,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
        proto: 0,
        first_seen_ns: 0,
        last_seen_ns: 0,
        tcp: TcpState::None,
        reply_seen: false,
        generation: 0,
        rule: None,
        ingress: 0,
        packets: 0,
        bytes: 0,
    };

    /// An empty buffer with room for `room` records whose memory is already written: the
    /// kernel maps the pages of a fresh allocation at their first write, and that first write
    /// must not be the worker's (page faults cost it several times the copy itself).
    fn buffer(room: usize) -> Vec<FlowRecord> {
        let mut records = vec![FlowRecord::UNFILLED; room];
        records.clear();
        records
    }

    fn of(entry: &FlowEntry<FlowVerdict>, stats: Option<&FlowStats>, worker: usize) -> FlowRecord {
        let key = entry.key();
        let ((src, sport), (dst, dport)) = key.endpoints(entry.initiator());
        let verdict = entry.value;
        FlowRecord {
            worker,
            src: unmapped_address(src),
            dst: unmapped_address(dst),
            sport,
            dport,
            proto: key.proto(),
            first_seen_ns: entry.first_seen_ns(),
            last_seen_ns: entry.last_seen_ns(),
            tcp: entry.tcp(),
            reply_seen: entry.reply_seen(),
            generation: verdict.generation(),
            rule: Some(verdict.rule()).filter(|&rule| rule != NO_RULE),
            ingress: verdict.ingress(),
            packets: stats.map_or(0, FlowStats::packets),
            bytes: stats.map_or(0, FlowStats::bytes),
        }
    }
}

/// One worker's part of a snapshot.
#[derive(Debug, PartialEq, Eq)]
pub struct WorkerFlows {
    pub worker: usize,
    pub records: Vec<FlowRecord>,
    /// Flows found beyond the records' room (0: the part is complete).
    pub flows_left_out: u64,
}

/// Every worker's flows.
#[derive(Debug, PartialEq, Eq)]
pub struct FlowSnapshot {
    /// One part per worker, in worker order.
    pub workers: Vec<WorkerFlows>,
}

impl FlowSnapshot {
    pub fn records(&self) -> impl Iterator<Item = &FlowRecord> {
        self.workers.iter().flat_map(|part| part.records.iter())
    }

    /// Flows left out, over all workers, for want of room.
    pub fn flows_left_out(&self) -> u64 {
        self.workers.iter().map(|part| part.flows_left_out).sum()
    }

    pub fn is_truncated(&self) -> bool {
        self.flows_left_out() > 0
    }
}

/// Why a snapshot was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("a flow-table snapshot is already being taken")]
    InProgress,
    #[error("the workers are still copying an abandoned snapshot; try again shortly")]
    WorkersBusy,
    #[error("{answered} of {workers} workers answered within {timeout:?}")]
    TimedOut {
        answered: usize,
        workers: usize,
        timeout: Duration,
    },
    #[error("a worker has stopped")]
    WorkerGone,
}

/// A request on its way to a worker and back.
#[derive(Debug)]
struct SnapshotJob {
    id: u64,
    /// Records the part has room for; its vector holds at least as much.
    room: usize,
    /// `None` once the walk is over.
    cursor: Option<FlowCursor>,
    flows: WorkerFlows,
}

impl SnapshotJob {
    fn copy(&mut self, entry: &FlowEntry<FlowVerdict>, stats: Option<&FlowStats>) {
        if self.flows.records.len() < self.room {
            // Within the capacity the control side reserved: no allocation.
            let record = FlowRecord::of(entry, stats, self.flows.worker);
            self.flows.records.push(record);
        } else {
            self.flows.flows_left_out += 1;
        }
    }
}

/// The control side's channels to one worker.
#[derive(Debug)]
struct Mailbox {
    requests: Sender<SnapshotJob>,
    parts: Receiver<SnapshotJob>,
}

#[derive(Debug)]
struct SnapshotHub {
    mailboxes: Mutex<Vec<Mailbox>>,
    /// Records a worker's table holds at most: no part needs more room.
    flow_capacity: usize,
    taking: AtomicBool,
    next_id: AtomicU64,
}

/// Takes snapshots of the workers' flow tables; clones share the workers.
#[derive(Clone, Debug)]
pub struct FlowSnapshots {
    hub: Arc<SnapshotHub>,
}

impl FlowSnapshots {
    /// A hub for workers whose tables hold at most `flow_capacity` flows.
    pub(crate) fn new(flow_capacity: usize) -> FlowSnapshots {
        FlowSnapshots {
            hub: Arc::new(SnapshotHub {
                mailboxes: Mutex::new(Vec::new()),
                flow_capacity,
                taking: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// A new worker's end of its channels; parts are numbered in registration order.
    pub(crate) fn register_worker(&self) -> WorkerFlowSnapshots {
        let (requests, worker_requests) = bounded(1);
        let (worker_parts, parts) = bounded(PARTS_PER_WORKER);
        self.lock().push(Mailbox { requests, parts });
        WorkerFlowSnapshots {
            requests: worker_requests,
            parts: worker_parts,
            job: None,
        }
    }

    /// Asks every worker for its flows, at most `records_per_worker` each (and no more than a
    /// table holds), without waiting; the buffers are allocated here.
    pub fn request(&self, records_per_worker: usize) -> Result<PendingSnapshot, SnapshotError> {
        if self
            .hub
            .taking
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(SnapshotError::InProgress);
        }
        // From here on the pending snapshot owns the flag: dropped on any error, it clears it.
        let mut pending = PendingSnapshot {
            hub: self.hub.clone(),
            id: self.hub.next_id.fetch_add(1, Ordering::Relaxed),
            parts: Vec::new(),
            received: Vec::new(),
        };
        let mailboxes = self.lock();
        // Parts of abandoned snapshots are freed here, on the control side.
        for mailbox in mailboxes.iter() {
            while mailbox.parts.try_recv().is_ok() {}
        }
        // The only sender is this call, under the flag: room seen now stays.
        if mailboxes.iter().any(|mailbox| mailbox.requests.is_full()) {
            return Err(SnapshotError::WorkersBusy);
        }
        let room = records_per_worker.min(self.hub.flow_capacity);
        for (worker, mailbox) in mailboxes.iter().enumerate() {
            let job = SnapshotJob {
                id: pending.id,
                room,
                cursor: Some(FlowCursor::default()),
                flows: WorkerFlows {
                    worker,
                    records: FlowRecord::buffer(room),
                    flows_left_out: 0,
                },
            };
            mailbox
                .requests
                .try_send(job)
                .map_err(|_| SnapshotError::WorkerGone)?;
            pending.parts.push(mailbox.parts.clone());
            pending.received.push(None);
        }
        drop(mailboxes);
        Ok(pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Mailbox>> {
        // The list is only ever pushed to: a panic elsewhere leaves it whole.
        self.hub
            .mailboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A snapshot the workers are taking; dropping it abandons it (the workers finish their walk
/// and the parts are freed by the next request).
#[derive(Debug)]
#[must_use = "the snapshot is only known by waiting for it"]
pub struct PendingSnapshot {
    hub: Arc<SnapshotHub>,
    id: u64,
    parts: Vec<Receiver<SnapshotJob>>,
    received: Vec<Option<WorkerFlows>>,
}

impl PendingSnapshot {
    /// Takes the parts that have arrived, without waiting; true when every worker has answered
    /// (then [`PendingSnapshot::wait`] returns at once).
    pub fn is_ready(&mut self) -> bool {
        for worker in 0..self.parts.len() {
            while self.received[worker].is_none() {
                match self.parts[worker].try_recv() {
                    Ok(job) => self.take(worker, job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        }
        self.received.iter().all(Option::is_some)
    }

    /// Every worker's part, waiting up to `timeout` for them.
    pub fn wait(mut self, timeout: Duration) -> Result<FlowSnapshot, SnapshotError> {
        let deadline = Instant::now() + timeout;
        for worker in 0..self.parts.len() {
            while self.received[worker].is_none() {
                match self.parts[worker].recv_deadline(deadline) {
                    Ok(job) => self.take(worker, job),
                    Err(RecvTimeoutError::Timeout) => {
                        return Err(SnapshotError::TimedOut {
                            answered: self.received.iter().filter(|part| part.is_some()).count(),
                            workers: self.parts.len(),
                            timeout,
                        });
                    }
                    Err(RecvTimeoutError::Disconnected) => return Err(SnapshotError::WorkerGone),
                }
            }
        }
        Ok(FlowSnapshot {
            workers: self.received.iter_mut().filter_map(Option::take).collect(),
        })
    }

    /// Keeps `job` if it answers this request; a part of an abandoned one is freed.
    fn take(&mut self, worker: usize, job: SnapshotJob) {
        if job.id == self.id {
            self.received[worker] = Some(job.flows);
        }
    }
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        self.hub.taking.store(false, Ordering::Release);
    }
}

// The control side uses these from its own threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<FlowSnapshots>();
    send_and_sync::<PendingSnapshot>();
};

/// A worker's end: takes requests, copies its table a bounded part per loop iteration, returns
/// the buffer.
#[derive(Debug)]
pub struct WorkerFlowSnapshots {
    requests: Receiver<SnapshotJob>,
    parts: Sender<SnapshotJob>,
    /// The request being copied or waiting to go back.
    job: Option<SnapshotJob>,
}

impl WorkerFlowSnapshots {
    /// One loop iteration's share: picks up a request, copies up to [`FLOW_SLOTS_PER_POLL`]
    /// slots of `flows`, returns the part once the walk is over. Allocates and frees nothing.
    pub(crate) fn step(&mut self, flows: &FlowTable<FlowVerdict>) {
        let mut job = match self.job.take() {
            Some(job) => job,
            None => match self.requests.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            },
        };
        if let Some(cursor) = job.cursor {
            job.cursor = flows.for_each_from(cursor, FLOW_SLOTS_PER_POLL, |entry, stats| {
                job.copy(entry, stats)
            });
        }
        if job.cursor.is_some() {
            self.job = Some(job);
            return;
        }
        // Never full (see PARTS_PER_WORKER) and never disconnected while the hub lives; if it
        // were, the part is kept and offered again, not freed here.
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.parts.try_send(job)
        {
            self.job = Some(job);
        }
    }
}
