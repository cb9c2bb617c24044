//! The gRPC API (`vfn.v1.Control`, with server reflection and the standard health service) on a
//! Unix socket, on a thread of its own with a single-threaded tokio runtime. Handlers check the
//! caller's role (from the peer's uid, SO_PEERCRED) and the request rate, then hand the request
//! to the controller on the supervisor thread through a bounded queue and await its answer.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vfn_config::{ApiConfig, ApiRole};
use vfn_control::proto;
use vfn_control::proto::control_server::{Control, ControlServer};
use vfn_dataplane::capture::{
    CaptureDirection, CaptureFilter, CaptureHub, CaptureSpec, FrameDirection,
};
use vfn_dataplane::flow_snapshot::{FlowRecord, FlowSnapshots};
use vfn_dataplane::iface::Interfaces;
use vfn_dataplane::io::PortIndex;
use vfn_dataplane::policy::{ActivePolicy, SharedPolicy};
use vfn_dataplane::ratelimit::TokenBucket;

use crate::controller::{Call, ControlError, Controller};
use crate::endpoint::MetricsEndpoint;
use crate::events::Events;
use crate::exporter::FlowWatchers;
use crate::stats::Metrics;

/// Calls waiting for the controller; more are refused with UNAVAILABLE.
pub const CALL_QUEUE_CAPACITY: usize = 64;

/// Events buffered per watcher between the broadcast and its connection.
const WATCH_BUFFER: usize = 64;

type FlowUpdates =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::FlowUpdate, Status>> + Send>>;

type CaptureFrames = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::CapturedFrame, Status>> + Send>,
>;

/// The filter of a flow query.
struct FlowFilter {
    prefix: Option<ipnet::IpNet>,
    port: Option<u16>,
    protocol: Option<u8>,
}

impl FlowFilter {
    fn from_parts(
        prefix: &str,
        port: Option<u32>,
        protocol: Option<u32>,
    ) -> Result<FlowFilter, Status> {
        let prefix = (!prefix.is_empty())
            .then(|| {
                vfn_config::parse_prefix(prefix)
                    .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))
            })
            .transpose()?;
        let port = port
            .map(|p| u16::try_from(p).map_err(|_| Status::invalid_argument("port: above 65535")))
            .transpose()?;
        let protocol = protocol
            .map(|p| u8::try_from(p).map_err(|_| Status::invalid_argument("protocol: above 255")))
            .transpose()?;
        Ok(FlowFilter {
            prefix,
            port,
            protocol,
        })
    }

    fn matches(&self, flow: &FlowRecord) -> bool {
        self.matches_addresses(flow.src, flow.dst, flow.sport, flow.dport, flow.proto)
    }

    fn matches_addresses(
        &self,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> bool {
        self.prefix
            .is_none_or(|p| p.contains(&src) || p.contains(&dst))
            && self.port.is_none_or(|port| sport == port || dport == port)
            && self.protocol.is_none_or(|wanted| proto == wanted)
    }

    /// For records whose addresses are text (as the API carries them).
    fn matches_text(&self, src: &str, dst: &str, sport: u32, dport: u32, proto: u32) -> bool {
        let address = |text: &str| text.parse().unwrap_or(IpAddr::from([0u8; 4]));
        self.matches_addresses(
            address(src),
            address(dst),
            u16::try_from(sport).unwrap_or(0),
            u16::try_from(dport).unwrap_or(0),
            u8::try_from(proto).unwrap_or(0),
        )
    }
}

/// The id of the rule that decided `flow`: "" for the default action, "(replaced rule set)"
/// when the set in force is newer than the flow's verdict.
fn rule_id(policy: Option<&ActivePolicy>, flow: &FlowRecord) -> String {
    match (flow.rule, policy) {
        (None, _) => String::new(),
        (Some(index), Some(policy)) if policy.generation == flow.generation => policy
            .rules
            .rules
            .get(index as usize)
            .map_or_else(String::new, |rule| rule.id.clone()),
        (Some(_), _) => "(replaced rule set)".into(),
    }
}

/// What a capture request asks for, checked.
fn capture_spec(
    wanted: &proto::CaptureRequest,
    port_names: &[String],
) -> Result<CaptureSpec, Status> {
    let port = port_names
        .iter()
        .position(|name| *name == wanted.port)
        .and_then(|index| PortIndex::try_from(index).ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "port: no port {:?} (ports: {})",
                wanted.port,
                port_names.join(", ")
            ))
        })?;
    let host = (!wanted.host.is_empty())
        .then(|| {
            vfn_config::parse_prefix(&wanted.host)
                .map_err(|e| Status::invalid_argument(format!("host: {e}")))
        })
        .transpose()?;
    let protocol = wanted
        .protocol
        .map(|p| u8::try_from(p).map_err(|_| Status::invalid_argument("protocol: above 255")))
        .transpose()?;
    let l4_port = wanted
        .l4_port
        .map(|p| u16::try_from(p).map_err(|_| Status::invalid_argument("l4_port: above 65535")))
        .transpose()?;
    let direction = match proto::CaptureDirection::try_from(wanted.direction) {
        Ok(proto::CaptureDirection::Both) => CaptureDirection::Both,
        Ok(proto::CaptureDirection::Received) => CaptureDirection::Received,
        Ok(proto::CaptureDirection::Sent) => CaptureDirection::Sent,
        Err(_) => return Err(Status::invalid_argument("direction: unknown")),
    };
    Ok(CaptureSpec {
        port,
        direction,
        filter: CaptureFilter {
            host,
            protocol,
            port: l4_port,
        },
        snap_len: wanted.snap_length as usize,
    })
}

type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::Event, Status>> + Send>>;

/// Who may do what over the Unix socket: root and the router's own uid write; the config lists
/// the others.
#[derive(Clone, Debug)]
struct Roles {
    writers: Vec<u32>,
    readers: Vec<u32>,
}

impl Roles {
    fn of(&self, uid: u32) -> Option<ApiRole> {
        let own = nix::unistd::Uid::current().as_raw();
        if uid == 0 || uid == own || self.writers.contains(&uid) {
            Some(ApiRole::Writer)
        } else if self.readers.contains(&uid) {
            Some(ApiRole::Reader)
        } else {
            None
        }
    }
}

/// A bearer token of a TCP client, read from its file at start.
struct Token {
    name: String,
    role: ApiRole,
    secret: Vec<u8>,
}

/// Shortest secret accepted: guessing must be hopeless.
const TOKEN_SECRET_LEN_MIN: usize = 16;

/// Compares without stopping at the first difference, so timing tells nothing of the secret.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What the API reads from the dataplane directly, without the controller: flow snapshots and
/// captures take long (they wait for workers), and must not hold up the controller's queue.
pub struct DataplaneView {
    pub flows: FlowSnapshots,
    pub capture: CaptureHub,
    pub policy: SharedPolicy,
    pub interfaces: Arc<Interfaces>,
    pub port_names: Vec<String>,
    /// The wall-clock time of the router's epoch, to turn its times into Unix times.
    pub epoch_unix: SystemTime,
    /// Flow records as the exporter sends them.
    pub flow_watchers: FlowWatchers,
}

/// Flows a query returns by default, and at most.
const FLOWS_DEFAULT: usize = 100;
const FLOWS_MAX: usize = 10_000;
/// How long the workers may take to copy their flow tables.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3);
/// Capture bounds: frames and seconds by default, and at most.
const CAPTURE_FRAMES_DEFAULT: u32 = 1_000;
const CAPTURE_FRAMES_MAX: u32 = 1_000_000;
const CAPTURE_SECONDS_DEFAULT: u32 = 10;
const CAPTURE_SECONDS_MAX: u32 = 3_600;

struct Api {
    calls: Sender<Call>,
    dataplane: DataplaneView,
    tokens: Vec<Token>,
    events: Events,
    /// Becomes true when the server stops, ending every event stream.
    stopping: tokio::sync::watch::Receiver<bool>,
    roles: Roles,
    /// Requests per second over all clients.
    rate: Mutex<(TokenBucket, Instant)>,
}

impl Api {
    /// The caller's principal and role: from the peer's uid on the Unix socket, from its bearer
    /// token on TCP.
    fn identify<T>(&self, request: &Request<T>) -> Result<(String, ApiRole), Status> {
        if let Some(info) = request.extensions().get::<UdsConnectInfo>() {
            let uid = info
                .peer_cred
                .map(|cred| cred.uid())
                .ok_or_else(|| Status::unauthenticated("no peer credentials on this connection"))?;
            let role = self.roles.of(uid).ok_or_else(|| {
                Status::permission_denied(format!(
                    "uid {uid} has no role (api.readers, api.writers)"
                ))
            })?;
            return Ok((format!("uid:{uid}"), role));
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("TCP clients need a bearer token"))?;
        self.tokens
            .iter()
            .find(|token| same_secret(&token.secret, presented.as_bytes()))
            .map(|token| (format!("token:{}", token.name), token.role))
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }

    /// The caller's principal once its role and the request rate allow `needed`.
    fn admit<T>(&self, request: &Request<T>, needed: ApiRole) -> Result<String, Status> {
        let (principal, role) = self.identify(request)?;
        if role < needed {
            return Err(Status::permission_denied(format!(
                "{principal} has the reader role; this call needs writer"
            )));
        }
        let allowed = {
            let mut guard = self.rate.lock().unwrap_or_else(|e| e.into_inner());
            let (bucket, epoch) = &mut *guard;
            bucket.try_take(epoch.elapsed())
        };
        if !allowed {
            return Err(Status::resource_exhausted(
                "over api.requests_per_second; retry later",
            ));
        }
        Ok(principal)
    }

    /// Runs `work` on the controller and returns its answer.
    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Controller) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |controller| {
            let _ = reply.send(work(controller));
        });
        self.calls.try_send(call).map_err(|error| match error {
            TrySendError::Full(_) => Status::unavailable("the controller is busy; retry later"),
            TrySendError::Disconnected(_) => Status::unavailable("the router is stopping"),
        })?;
        let outcome = answer
            .await
            .map_err(|_| Status::unavailable("the router is stopping"))?;
        outcome.map(Response::new).map_err(status)
    }
}

/// The gRPC status of a refusal, with a `google.rpc.BadRequest` listing each field's problem.
fn status(error: ControlError) -> Status {
    let message = error.to_string();
    let with_fields = |code, violations: Vec<vfn_control::convert::FieldViolation>| {
        let fields: Vec<tonic_types::FieldViolation> = violations
            .into_iter()
            .map(|v| tonic_types::FieldViolation::new(v.field, v.reason))
            .collect();
        Status::with_error_details(code, &message, ErrorDetails::with_bad_request(fields))
    };
    match error {
        ControlError::Invalid(violations) => with_fields(Code::InvalidArgument, violations),
        ControlError::OverLimit(violations) => with_fields(Code::ResourceExhausted, violations),
        ControlError::Precondition(_) => Status::failed_precondition(message),
        ControlError::NotFound(_) => Status::not_found(message),
        ControlError::Busy(_) => Status::unavailable(message),
        ControlError::TimedOut(_) => Status::deadline_exceeded(message),
        ControlError::Storage(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl Control for Api {
    async fn apply_rule_set(
        &self,
        request: Request<proto::ApplyRuleSetRequest>,
    ) -> Result<Response<proto::ApplyRuleSetResponse>, Status> {
        let received = Instant::now();
        let needed = if request.get_ref().dry_run {
            ApiRole::Reader
        } else {
            ApiRole::Writer
        };
        let principal = self.admit(&request, needed)?;
        let message = request.into_inner();
        self.call(move |c| c.apply_request(&principal, message, received))
            .await
    }

    async fn get_rule_set(
        &self,
        request: Request<proto::GetRuleSetRequest>,
    ) -> Result<Response<proto::GetRuleSetResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.rule_set())).await
    }

    async fn get_rule_counters(
        &self,
        request: Request<proto::GetRuleCountersRequest>,
    ) -> Result<Response<proto::GetRuleCountersResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.rule_counters())).await
    }

    async fn add_dynamic_entry(
        &self,
        request: Request<proto::AddDynamicEntryRequest>,
    ) -> Result<Response<proto::AddDynamicEntryResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let message = request.into_inner();
        self.call(move |c| c.add_dynamic(&principal, message)).await
    }

    async fn list_dynamic_entries(
        &self,
        request: Request<proto::ListDynamicEntriesRequest>,
    ) -> Result<Response<proto::ListDynamicEntriesResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.list_dynamic())).await
    }

    async fn remove_dynamic_entry(
        &self,
        request: Request<proto::RemoveDynamicEntryRequest>,
    ) -> Result<Response<proto::RemoveDynamicEntryResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let id = request.get_ref().id;
        self.call(move |c| {
            c.remove_dynamic(&principal, id)
                .map(|()| proto::RemoveDynamicEntryResponse {})
        })
        .await
    }

    async fn add_mirror_policy(
        &self,
        request: Request<proto::AddMirrorPolicyRequest>,
    ) -> Result<Response<proto::AddMirrorPolicyResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let message = request.into_inner();
        self.call(move |c| c.add_mirror_policy(&principal, message))
            .await
    }

    async fn list_mirror_policies(
        &self,
        request: Request<proto::ListMirrorPoliciesRequest>,
    ) -> Result<Response<proto::ListMirrorPoliciesResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.list_mirror_policies())).await
    }

    async fn remove_mirror_policy(
        &self,
        request: Request<proto::RemoveMirrorPolicyRequest>,
    ) -> Result<Response<proto::RemoveMirrorPolicyResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let id = request.get_ref().id;
        self.call(move |c| {
            c.remove_mirror_policy(&principal, id)
                .map(|()| proto::RemoveMirrorPolicyResponse {})
        })
        .await
    }

    async fn list_routes(
        &self,
        request: Request<proto::ListRoutesRequest>,
    ) -> Result<Response<proto::ListRoutesResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.list_routes())).await
    }

    async fn add_route(
        &self,
        request: Request<proto::AddRouteRequest>,
    ) -> Result<Response<proto::RouteChangeResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let message = request.into_inner();
        self.call(move |c| c.add_route(&principal, message)).await
    }

    async fn delete_route(
        &self,
        request: Request<proto::DeleteRouteRequest>,
    ) -> Result<Response<proto::RouteChangeResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let prefix = request.into_inner().prefix;
        self.call(move |c| c.delete_route(&principal, &prefix))
            .await
    }

    async fn list_neighbours(
        &self,
        request: Request<proto::ListNeighboursRequest>,
    ) -> Result<Response<proto::ListNeighboursResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.list_neighbours())).await
    }

    async fn add_neighbour(
        &self,
        request: Request<proto::AddNeighbourRequest>,
    ) -> Result<Response<proto::AddNeighbourResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let message = request.into_inner();
        self.call(move |c| c.add_neighbour(&principal, message))
            .await
    }

    async fn delete_neighbour(
        &self,
        request: Request<proto::DeleteNeighbourRequest>,
    ) -> Result<Response<proto::DeleteNeighbourResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let message = request.into_inner();
        self.call(move |c| c.delete_neighbour(&principal, message))
            .await
    }

    async fn query_flows(
        &self,
        request: Request<proto::QueryFlowsRequest>,
    ) -> Result<Response<proto::QueryFlowsResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        let query = request.into_inner();
        let filter = FlowFilter::from_parts(&query.prefix, query.port, query.protocol)?;
        let limit = match query.limit {
            0 => FLOWS_DEFAULT,
            n => (n as usize).min(FLOWS_MAX),
        };
        let pending = self
            .dataplane
            .flows
            .request(usize::MAX)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let snapshot = tokio::task::spawn_blocking(move || pending.wait(SNAPSHOT_TIMEOUT))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut matching: Vec<&FlowRecord> =
            snapshot.records().filter(|r| filter.matches(r)).collect();
        // Top flows: the most bytes, then the most recently active.
        matching.sort_unstable_by_key(|r| std::cmp::Reverse((r.bytes, r.last_seen_ns)));
        let policy = self.dataplane.policy.load_full();
        let view = &self.dataplane;
        let unix_millis = |ns: u64| {
            let at = view.epoch_unix + Duration::from_nanos(ns);
            at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let flows = matching
            .iter()
            .take(limit)
            .map(|r| proto::Flow {
                source: r.src.to_string(),
                source_port: r.sport.into(),
                destination: r.dst.to_string(),
                destination_port: r.dport.into(),
                protocol: r.proto.into(),
                worker: u32::try_from(r.worker).unwrap_or(u32::MAX),
                first_seen_unix_millis: unix_millis(r.first_seen_ns),
                last_seen_unix_millis: unix_millis(r.last_seen_ns),
                tcp_state: format!("{:?}", r.tcp).to_lowercase(),
                reply_seen: r.reply_seen,
                rule: rule_id(policy.as_deref(), r),
                generation: r.generation,
                ingress: view
                    .interfaces
                    .get(r.ingress)
                    .map(|i| i.name.clone())
                    .unwrap_or_default(),
                packets: r.packets,
                bytes: r.bytes,
            })
            .collect();
        Ok(Response::new(proto::QueryFlowsResponse {
            flows,
            matched: matching.len() as u64,
            left_out: snapshot.flows_left_out(),
        }))
    }

    type WatchFlowsStream = FlowUpdates;

    async fn watch_flows(
        &self,
        request: Request<proto::WatchFlowsRequest>,
    ) -> Result<Response<Self::WatchFlowsStream>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        let wanted = request.into_inner();
        let filter = FlowFilter::from_parts(&wanted.prefix, wanted.port, wanted.protocol)?;
        let mut records = self.dataplane.flow_watchers.subscribe();
        let mut stopping = self.stopping.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            loop {
                let update = tokio::select! {
                    received = records.recv() => match received {
                        Ok(record) => {
                            let wanted_record = filter.matches_text(
                                &record.source,
                                &record.destination,
                                record.source_port,
                                record.destination_port,
                                record.protocol,
                            ) && (wanted.verdict.is_empty() || record.verdict == wanted.verdict)
                                && (wanted.rule.is_empty() || record.rule == wanted.rule);
                            if !wanted_record {
                                continue;
                            }
                            proto::flow_update::Kind::Record(record)
                        }
                        Err(RecvError::Lagged(count)) => proto::flow_update::Kind::Lost(count),
                        Err(RecvError::Closed) => break,
                    },
                    _ = stopping.changed() => break,
                };
                let update = proto::FlowUpdate { kind: Some(update) };
                if sender.send(Ok(update)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type CaptureStream = CaptureFrames;

    async fn capture(
        &self,
        request: Request<proto::CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        let wanted = request.into_inner();
        let spec = capture_spec(&wanted, &self.dataplane.port_names)?;
        let max_frames = match wanted.max_frames {
            0 => CAPTURE_FRAMES_DEFAULT,
            n => n.min(CAPTURE_FRAMES_MAX),
        };
        let seconds = match wanted.max_seconds {
            0 => CAPTURE_SECONDS_DEFAULT,
            n => n.min(CAPTURE_SECONDS_MAX),
        };
        let mut session = self
            .dataplane
            .capture
            .start(spec)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let stopping = self.stopping.clone();
        let epoch_unix = self.dataplane.epoch_unix;
        // The session is read on a blocking thread: it waits on the workers' channels. It ends
        // at the bounds, when the client leaves, or when the server stops; dropping it stops
        // the workers' copying.
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(seconds.into());
            let mut sent = 0;
            while sent < max_frames && Instant::now() < deadline && !*stopping.borrow() {
                let Some(frame) = session.next_timeout(Duration::from_millis(100)) else {
                    if sender.is_closed() {
                        break;
                    }
                    continue;
                };
                let time = epoch_unix + Duration::from_nanos(frame.time_ns);
                let message = proto::CapturedFrame {
                    time_unix_nanos: time
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                    direction: match frame.direction {
                        FrameDirection::Received => "received",
                        FrameDirection::Sent => "sent",
                    }
                    .into(),
                    original_length: frame.original_len,
                    data: frame.data,
                    lost: session.frames_lost(),
                };
                if sender.blocking_send(Ok(message)).is_err() {
                    break;
                }
                sent += 1;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        let mut events = self.events.subscribe();
        let mut stopping = self.stopping.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        // Forwards until the watcher leaves or the server stops; a watcher that fell behind is
        // told how many events it missed.
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) => event,
                        Err(RecvError::Lagged(count)) => proto::Event {
                            time_unix_millis: 0,
                            kind: Some(proto::event::Kind::EventsLost(proto::EventsLost { count })),
                        },
                        Err(RecvError::Closed) => break,
                    },
                    _ = stopping.changed() => break,
                };
                if sender.send(Ok(event)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::GetStatsResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.stats())).await
    }

    async fn load_models(
        &self,
        request: Request<proto::LoadModelsRequest>,
    ) -> Result<Response<proto::LoadModelsResponse>, Status> {
        let principal = self.admit(&request, ApiRole::Writer)?;
        let message = request.into_inner();
        self.call(move |c| c.load_models(&principal, message)).await
    }

    async fn get_scoring(
        &self,
        request: Request<proto::GetScoringRequest>,
    ) -> Result<Response<proto::GetScoringResponse>, Status> {
        self.admit(&request, ApiRole::Reader)?;
        self.call(|c| Ok(c.get_scoring())).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("api.socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("api.socket {0}: something other than a socket is there; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("the API runtime: {0}")]
    Runtime(std::io::Error),
    #[error("server reflection: {0}")]
    Reflection(String),
    #[error("api.tcp: {0}")]
    Tcp(std::io::Error),
    #[error("api.tls: {0}")]
    Tls(tonic::transport::Error),
    #[error("api.tokens[{index}].file {path}: {reason}")]
    Token {
        index: usize,
        path: PathBuf,
        reason: String,
    },
    #[error("api.tls {path}: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API server: {0}")]
    Transport(tonic::transport::Error),
}

/// Binds the socket (replacing a stale one a previous run left), with the configured mode.
fn bind(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener, ServeError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let socket_error = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_error)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(socket_error)?
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(socket_error(error)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(socket_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(socket_error)?;
    listener.set_nonblocking(true).map_err(socket_error)?;
    Ok(listener)
}

/// The API server, bound and ready to run on its own thread.
pub struct ApiServer {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    api: Api,
    max_message_bytes: usize,
    stop_watchers: tokio::sync::watch::Sender<bool>,
    tcp: Option<std::net::TcpListener>,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Reads every token's secret (trimmed of surrounding white space).
fn read_tokens(config: &ApiConfig) -> Result<Vec<Token>, ServeError> {
    config
        .tokens
        .iter()
        .enumerate()
        .map(|(index, token)| {
            let error = |reason: String| ServeError::Token {
                index,
                path: token.file.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&token.file).map_err(|e| error(e.to_string()))?;
            let secret = text.trim();
            if secret.len() < TOKEN_SECRET_LEN_MIN {
                return Err(error(format!(
                    "a secret needs at least {TOKEN_SECRET_LEN_MIN} characters"
                )));
            }
            Ok(Token {
                name: token.name.clone(),
                role: token.role,
                secret: secret.as_bytes().to_vec(),
            })
        })
        .collect()
}

/// The TLS listener's identity and the client CA it requires certificates from.
fn tls_config(tls: &vfn_config::ApiTls) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(tonic::transport::Certificate::from_pem(read(
            &tls.client_ca,
        )?)))
}

impl ApiServer {
    /// Binds the socket; requests reach the controller through `calls`.
    pub fn bind(
        config: &ApiConfig,
        calls: Sender<Call>,
        events: Events,
        dataplane: DataplaneView,
    ) -> Result<ApiServer, ServeError> {
        let listener = bind(&config.socket, config.socket_mode)?;
        let tokens = read_tokens(config)?;
        let tls = config.tls.as_ref().map(tls_config).transpose()?;
        let tcp = config
            .tcp
            .map(|address| {
                let listener = std::net::TcpListener::bind(address)?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .transpose()
            .map_err(ServeError::Tcp)?;
        let (stop_watchers, stopping) = tokio::sync::watch::channel(false);
        let rate = u64::from(config.requests_per_second);
        Ok(ApiServer {
            listener,
            path: config.socket.clone(),
            stop_watchers,
            tcp,
            tls,
            api: Api {
                calls,
                dataplane,
                tokens,
                events,
                stopping,
                roles: Roles {
                    writers: config.writers.clone(),
                    readers: config.readers.clone(),
                },
                rate: Mutex::new((TokenBucket::new(rate, rate), Instant::now())),
            },
            max_message_bytes: config.max_message_bytes as usize,
        })
    }

    /// Serves until `stop` is set, then removes the socket; serves the metrics endpoint too
    /// when given one.
    pub fn run(
        self,
        stop: Arc<AtomicBool>,
        metrics: Option<(MetricsEndpoint, Arc<Metrics>)>,
    ) -> Result<(), ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let path = self.path.clone();
        let outcome = runtime.block_on(async {
            if let Some((endpoint, metrics)) = metrics {
                tokio::spawn(endpoint.serve(metrics, self.stop_watchers.subscribe()));
            }
            self.serve(stop).await
        });
        let _ = std::fs::remove_file(&path);
        outcome
    }

    async fn serve(self, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
        let listener = tokio::net::UnixListener::from_std(self.listener).map_err(|source| {
            ServeError::Socket {
                path: self.path.clone(),
                source,
            }
        })?;
        let descriptors = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error =
            |e: tonic_reflection::server::Error| ServeError::Reflection(e.to_string());
        let reflection_v1 = descriptors().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = descriptors().build_v1alpha().map_err(reflection_error)?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ControlServer<Api>>().await;
        let control = ControlServer::from_arc(Arc::new(self.api))
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let routes = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(control);
        let stop_watchers = self.stop_watchers;
        let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopping.wait_for(|stopped| *stopped).await;
        };
        let unix = tonic::transport::Server::builder()
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                stopped(stop_watchers.subscribe()),
            );
        tracing::info!(socket = %self.path.display(), "API listening");
        let tcp = async {
            let Some(tcp) = self.tcp else {
                return Ok(());
            };
            let address = tcp.local_addr().ok();
            let listener = tokio::net::TcpListener::from_std(tcp).map_err(ServeError::Tcp)?;
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = self.tls {
                builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
            }
            tracing::info!(?address, "API listening on TCP");
            builder
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stopped(stop_watchers.subscribe()),
                )
                .await
                .map_err(ServeError::Transport)
        };
        let signal = async {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Event streams never end by themselves; a graceful stop waits for every stream.
            let _ = stop_watchers.send(true);
        };
        let (unix, tcp, ()) = tokio::join!(unix, tcp, signal);
        unix.map_err(ServeError::Transport)?;
        tcp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_writes_listed_uids_get_their_role_others_none() {
        let roles = Roles {
            writers: vec![1000],
            readers: vec![1001],
        };
        assert_eq!(roles.of(0), Some(ApiRole::Writer));
        assert_eq!(roles.of(1000), Some(ApiRole::Writer));
        assert_eq!(roles.of(1001), Some(ApiRole::Reader));
        assert_eq!(roles.of(65534), None);
        assert!(ApiRole::Writer > ApiRole::Reader);
    }
}
