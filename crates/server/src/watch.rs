//! The etcd Watch service (`etcdserverpb.Watch/Watch`), as etcd 3.4 answers on the wire.
//!
//! Shape: one task per gRPC stream owns that stream's watchers; there is no member-wide
//! hub. The task takes every applied event from the apply task's broadcast channel, and
//! reads the store when it must catch up. Why this shape:
//!
//! - Each watcher keeps `next`, the first revision it still owes. An event batch is
//!   delivered to a watcher only if it continues exactly from `next`; otherwise (the
//!   broadcast channel lagged, a follower installed a snapshot, the watch starts in the
//!   past) the watcher catches up from the store in bounded chunks and drops whatever the
//!   channel later brings that it already sent. So a watcher gets every matching event
//!   after its start exactly once, in revision order, or is canceled with the compacted
//!   revision: never a silent gap.
//! - Memory is bounded per stream: responses go through a queue of [`RESPONSE_QUEUE`]
//!   entries. When the client reads slowly the task waits on that queue, stops taking live
//!   events, the broadcast channel drops its oldest batches for this receiver only, and the
//!   task later catches up from the store instead of buffering. Other streams, and the
//!   apply task (whose `send` never waits), are not slowed by it.
//! - Everything a stream does happens in one task, so the `created` reply of each create
//!   goes out before any event of that watch, and replies keep the order of requests.
//!
//! The observable details (watch ids, error texts, header revisions, which replies exist)
//! were taken from a real etcd 3.4.23; `crates/cli/tests/watch.rs` compares the two.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use concord_api::etcdserverpb::{self as pb, watch_request::RequestUnion, watch_server::Watch};
use concord_api::mvccpb;
use concord_mvcc::{ChunkLimits, Event, EventKind, MvccError};
use prost::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::errors::EtcdError;
use crate::keys::Keys;
use crate::kv_convert::kv_to_pb;
use crate::shared::{requires_leader, Shared};
use concord_member::{CursorState, WatchCursor};

/// Responses queued for one stream's client; a slow client makes the task wait here.
pub const RESPONSE_QUEUE: usize = 16;
/// Revisions in one catch-up read (etcd's `watchBatchMaxRevs`).
pub const CATCH_UP_REVISIONS: usize = 1000;
/// Bytes of keys and values in one catch-up read (a revision is never split).
pub const CATCH_UP_BYTES: usize = 1 << 20;
/// Watchers one stream may hold; a create beyond it is refused (etcd has no limit).
pub const MAX_WATCHERS_PER_STREAM: usize = 100_000;
/// etcd raises a shorter `--experimental-watch-progress-notify-interval` to this
/// (`minWatchProgressInterval`).
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// etcd cuts fragments at `--max-request-bytes` plus its gRPC overhead allowance
/// (`grpcOverheadBytes`, 512 KiB), not at the flag's value alone.
const FRAGMENT_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long the error that ends a stream may wait for room in its response queue.
const FINAL_ERROR_WAIT: Duration = Duration::from_secs(5);

/// etcd's `mvcc.ErrWatcherDuplicateID` and `mvcc.ErrEmptyWatcherRange` texts.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const TOO_MANY_WATCHERS: &str = "concord: too many watchers on this stream";

/// `WatchCreateRequest.FilterType` values.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;

pub struct WatchService {
    pub shared: Arc<Shared>,
    /// Every applied event, in revision order (from the apply task).
    pub events: broadcast::Sender<Arc<Vec<Event>>>,
    /// The revision whose events have all been handed to `events` (see `ApplyLoop`).
    pub published_revision: Arc<AtomicI64>,
    /// `--experimental-watch-progress-notify-interval`.
    pub progress_interval: Duration,
    /// Becomes true when the member stops: open streams end.
    pub stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // etcdctl and clientv3 send `hasleader: true` on watch streams: such a stream is
        // refused, and later ended, when the member has no leader.
        let require_leader = requires_leader(request.metadata());
        self.shared.require_leader_if_asked(request.metadata())?;
        let (out, responses) = mpsc::channel(RESPONSE_QUEUE);
        // Subscribed before any watcher reads the current revision: every revision after
        // that either comes through here or shows up as a gap.
        let stream = WatchStream {
            shared: self.shared.clone(),
            live: self.events.subscribe(),
            published_revision: self.published_revision.clone(),
            out,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            progress_requested: false,
        };
        let timers =
            Timers { progress: self.progress_interval.max(MIN_PROGRESS_INTERVAL), end_without_leader: require_leader };
        tokio::spawn(stream.run(request.into_inner(), timers, self.stop.clone()));
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

/// Why a stream ends.
#[derive(Debug)]
enum End {
    /// The client went away: nothing to tell it.
    ClientGone,
    /// The stream ends with this error.
    Error(EtcdError),
}

#[derive(Debug)]
struct Watcher {
    keys: Keys,
    /// Where it is in the history (concord-member's `WatchCursor`). A compacted one keeps
    /// its id until the client cancels it, as in etcd, where it stays in the stream's
    /// watcher map.
    cursor: WatchCursor,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    progress_notify: bool,
    /// etcd's `progress[id]`: no event went out since the last progress tick.
    progress_due: bool,
}

impl Watcher {
    /// This watcher's view of `event`, or `None` if it does not want it.
    fn select(&self, event: &Event) -> Option<mvccpb::Event> {
        let filtered = match event.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        if filtered || !self.keys.contains(&event.kv.key) {
            return None;
        }
        Some(event_to_pb(event, self.prev_kv))
    }
}

fn event_to_pb(event: &Event, with_prev: bool) -> mvccpb::Event {
    let r#type = match event.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: r#type as i32,
        kv: Some(kv_to_pb(event.kv.clone())),
        prev_kv: if with_prev { event.prev_kv.clone().map(kv_to_pb) } else { None },
    }
}

/// How often the stream's periodic work runs.
struct Timers {
    progress: Duration,
    /// A `hasleader` stream ends once the member has lost its leader for a while.
    end_without_leader: bool,
}

/// One gRPC watch stream and its watchers.
struct WatchStream {
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<Vec<Event>>>,
    published_revision: Arc<AtomicI64>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    /// etcd's `nextID`: auto-assigned ids count up from 0, skipping ids in use.
    next_auto_id: i64,
    /// A progress request waits for its answer (see `progress_request`).
    progress_requested: bool,
}

impl WatchStream {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>, timers: Timers, mut stop: watch::Receiver<bool>) {
        let start = tokio::time::Instant::now();
        let mut progress = tokio::time::interval_at(start + timers.progress, timers.progress);
        let shared = self.shared.clone();
        let leader_lost = shared.leader_lost();
        tokio::pin!(leader_lost);
        // A stream that waited on a slow client does not owe a burst of missed ticks.
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut applied = self.shared.applied.clone();
        // A client that half-closes keeps its watches (etcd ignores the EOF).
        let mut requests_open = true;
        let out = self.out.clone();
        let end = loop {
            let step = tokio::select! {
                biased;
                _ = out.closed() => Err(End::ClientGone),
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => Err(End::Error(EtcdError::Stopped)),
                request = requests.message(), if requests_open => match request {
                    Ok(Some(request)) => self.handle_request(request).await,
                    Ok(None) => {
                        requests_open = false;
                        Ok(())
                    }
                    Err(_) => Err(End::ClientGone),
                },
                _ = &mut leader_lost, if timers.end_without_leader => Err(End::Error(EtcdError::NoLeader)),
                _ = progress.tick() => self.progress_tick().await,
                _ = std::future::ready(()), if self.catching_up().is_some() => match self.catch_up_one().await {
                    Ok(()) => self.answer_progress_if_due().await,
                    failed => failed,
                },
                batch = self.live.recv() => match self.handle_live(batch).await {
                    // A snapshot's revisions come with no batch: once the channel is
                    // empty, whoever still owes a revision the store holds catches up.
                    Ok(()) => {
                        self.notice_missed_revisions();
                        self.answer_progress_if_due().await
                    }
                    failed => failed,
                },
                changed = applied.changed() => match changed {
                    Ok(()) => {
                        self.notice_missed_revisions();
                        Ok(())
                    }
                    Err(_) => Err(End::Error(EtcdError::Stopped)),
                },
            };
            if let Err(end) = step {
                break end;
            }
        };
        if let End::Error(error) = end {
            // Behind a full queue the error waits its turn, for a bounded time: a client
            // that reads nothing must not keep the task.
            let _ = tokio::time::timeout(FINAL_ERROR_WAIT, self.out.send(Err(error.into()))).await;
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), End> {
        self.out.send(Ok(response)).await.map_err(|_| End::ClientGone)
    }

    fn response(&self, revision: i64, watch_id: i64) -> pb::WatchResponse {
        pb::WatchResponse { header: Some(self.shared.header(revision)), watch_id, ..pb::WatchResponse::default() }
    }

    async fn handle_request(&mut self, request: pb::WatchRequest) -> Result<(), End> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => self.progress_request().await,
            // etcd ignores a request it does not know rather than end the stream.
            None => Ok(()),
        }
    }

    /// Registers a watcher and answers `created` (or `created` + `canceled` with etcd's
    /// reason and watch id -1 when refused).
    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), End> {
        let current = self.shared.store.current_revision();
        let mut reply = self.response(current, -1);
        reply.created = true;
        match self.add_watcher(create, current) {
            Ok(id) => reply.watch_id = id,
            Err(reason) => {
                reply.canceled = true;
                reply.cancel_reason = reason.to_string();
            }
        }
        self.send(reply).await
    }

    fn add_watcher(&mut self, create: pb::WatchCreateRequest, current: i64) -> Result<i64, &'static str> {
        let keys = Keys::decode(create.key, create.range_end)?;
        if self.watchers.len() >= MAX_WATCHERS_PER_STREAM {
            return Err(TOO_MANY_WATCHERS);
        }
        // etcd: watch id 0 asks for one to be assigned (so 0 can never be chosen).
        let id = if create.watch_id == 0 {
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        } else if self.watchers.contains_key(&create.watch_id) {
            return Err(DUPLICATE_ID);
        } else {
            create.watch_id
        };
        let start = if create.start_revision == 0 { current + 1 } else { create.start_revision };
        // A start at or below the current revision reads the store first; a future one
        // waits for the live channel (a gap there sends it to the store too).
        let watcher = Watcher {
            keys,
            cursor: WatchCursor::new(start, current),
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&FILTER_NOPUT),
            no_delete: create.filters.contains(&FILTER_NODELETE),
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            progress_due: true,
        };
        self.watchers.insert(id, watcher);
        Ok(id)
    }

    /// etcd answers only the cancel of a watch that exists.
    async fn cancel(&mut self, id: i64) -> Result<(), End> {
        if self.watchers.remove(&id).is_none() {
            return Ok(());
        }
        let mut reply = self.response(self.shared.store.current_revision(), id);
        reply.canceled = true;
        self.send(reply).await
    }

    /// etcd 3.4 answers at once with watch id -1 and its current revision. Here the answer
    /// waits until no watcher of the stream is catching up (as etcd 3.5 does), and its
    /// revision is the one every watcher has been sent all events up to (the current
    /// revision once all are live): a client never takes it as a promise the stream has
    /// not kept, and it never goes below what a watch was already sent.
    async fn progress_request(&mut self) -> Result<(), End> {
        self.progress_requested = true;
        self.answer_progress_if_due().await
    }

    async fn answer_progress_if_due(&mut self) -> Result<(), End> {
        if !self.progress_requested || self.catching_up().is_some() {
            return Ok(());
        }
        self.drain_live().await?;
        if self.catching_up().is_some() {
            return Ok(());
        }
        self.progress_requested = false;
        let current = self.shared.store.current_revision();
        let delivered = self
            .watchers
            .values()
            .filter(|w| w.cursor.state() != CursorState::Compacted)
            .map(|w| w.cursor.next() - 1)
            .fold(current, i64::min);
        self.send(self.response(delivered.max(1), -1)).await
    }

    /// Takes the live batches already queued (without waiting for more).
    async fn drain_live(&mut self) -> Result<(), End> {
        for _ in 0..self.live.len() {
            match self.live.try_recv() {
                Ok(batch) => self.deliver_live(&batch).await?,
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.notice_missed_revisions(),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// etcd's progress ticker: a `progress_notify` watcher that is live and got no event
    /// since the last tick gets an empty response at the current revision.
    async fn progress_tick(&mut self) -> Result<(), End> {
        let current = self.shared.store.current_revision();
        let mut due = Vec::new();
        for (&id, watcher) in self.watchers.iter_mut().filter(|(_, w)| w.progress_notify) {
            if watcher.progress_due && watcher.cursor.state() == CursorState::Live && watcher.cursor.next() > current {
                due.push(id);
            }
            watcher.progress_due = true;
        }
        for id in due {
            self.send(self.response(current, id)).await?;
        }
        Ok(())
    }

    async fn handle_live(&mut self, batch: Result<Arc<Vec<Event>>, RecvError>) -> Result<(), End> {
        match batch {
            Ok(batch) => self.deliver_live(&batch).await,
            // Batches were dropped for this receiver: whoever is behind reads the store.
            Err(RecvError::Lagged(_)) => {
                self.notice_missed_revisions();
                Ok(())
            }
            Err(RecvError::Closed) => Err(End::Error(EtcdError::Stopped)),
        }
    }

    /// Sends each live watcher the part of `batch` it owes, one response per revision as
    /// etcd does; a watcher the batch does not continue from goes to catch up.
    async fn deliver_live(&mut self, batch: &[Event]) -> Result<(), End> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(()) };
        let wants_prev = self.watchers.values().any(|w| w.cursor.state() == CursorState::Live && w.prev_kv);
        let filled = self.with_delete_prevs(batch, wants_prev).await?;
        let batch = filled.as_deref().unwrap_or(batch);
        let (first, last) = (first.kv.mod_revision, last.kv.mod_revision);
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(watcher) = self.watchers.get_mut(&id) else { continue };
            let Some(from) = watcher.cursor.take_live(first, last) else { continue };
            let mut responses = Vec::new();
            for revision in batch.chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision) {
                let revision_number = revision[0].kv.mod_revision;
                if revision_number < from {
                    continue;
                }
                let events: Vec<mvccpb::Event> = revision.iter().filter_map(|e| watcher.select(e)).collect();
                if !events.is_empty() {
                    responses.push((revision_number, events));
                }
            }
            for (revision, events) in responses {
                self.send_events(id, revision, events).await?;
            }
        }
        Ok(())
    }

    /// A live batch with the deleted version in every Delete event that lacks it, if
    /// `wanted` (a watcher of this stream asked for `prev_kv`) and some event lacks it;
    /// `None` when nothing is to be read. The apply leaves deleted versions out, as etcd's
    /// does: a DeleteRange of many keys reads none of their values unless someone needs
    /// them. (A catch-up read fills them in its own blocking read: `catch_up_one`.)
    async fn with_delete_prevs(&self, events: &[Event], wanted: bool) -> Result<Option<Vec<Event>>, End> {
        if !wanted || !events.iter().any(|e| e.kind == EventKind::Delete && e.prev_kv.is_none()) {
            return Ok(None);
        }
        let store = self.shared.store.clone();
        let mut owned = events.to_vec();
        let filled = tokio::task::spawn_blocking(move || store.fill_delete_prevs(&mut owned).map(|()| owned))
            .await
            .map_err(|e| End::Error(EtcdError::Internal(format!("watch prev_kv read panicked: {e}"))))?;
        filled.map(Some).map_err(|error| End::Error(EtcdError::from(error)))
    }

    /// A snapshot installed on a follower brings revisions whose events never pass the
    /// live channel. After any apply, a live watcher that owes a revision already
    /// published (sent to the channel, or installed by a snapshot), while no live batch is
    /// queued to bring it, catches up. A revision committed but not yet sent does not
    /// count: its batch is on its way.
    fn notice_missed_revisions(&mut self) {
        if !self.live.is_empty() {
            return;
        }
        let current = self.published_revision.load(Ordering::Acquire);
        for watcher in self.watchers.values_mut() {
            watcher.cursor.notice_published(current);
        }
    }

    fn catching_up(&self) -> Option<i64> {
        self.watchers.iter().find(|(_, w)| w.cursor.state() == CursorState::CatchingUp).map(|(&id, _)| id)
    }

    /// Reads one bounded chunk of history for the first watcher that is catching up and
    /// sends what it matches in one response (etcd sends a catch-up as one response of
    /// many revisions). A compacted start cancels the watch as etcd does: header revision
    /// 0, `canceled`, `compact_revision`.
    async fn catch_up_one(&mut self) -> Result<(), End> {
        let Some(id) = self.catching_up() else { return Ok(()) };
        let watcher = &self.watchers[&id];
        let (from, resumed, wants_prev) = (watcher.cursor.next(), watcher.cursor.resumed(), watcher.prev_kv);
        let store = self.shared.store.clone();
        let limits = ChunkLimits { max_revisions: CATCH_UP_REVISIONS, max_bytes: CATCH_UP_BYTES };
        let read = tokio::task::spawn_blocking(move || {
            let mut chunk = store.events_chunk(from, limits, resumed)?;
            if wants_prev {
                store.fill_delete_prevs(&mut chunk.events)?;
            }
            Ok(chunk)
        })
        .await
        .map_err(|e| End::Error(EtcdError::Internal(format!("watch catch-up read panicked: {e}"))))?;
        let chunk = match read {
            Ok(chunk) => chunk,
            Err(MvccError::Compacted) => return self.cancel_compacted(id).await,
            Err(error) => return Err(End::Error(EtcdError::from(error))),
        };
        let Some(watcher) = self.watchers.get_mut(&id) else { return Ok(()) };
        watcher.cursor.caught_up(chunk.through, chunk.current);
        let events: Vec<mvccpb::Event> = chunk.events.iter().filter_map(|e| watcher.select(e)).collect();
        if events.is_empty() {
            return Ok(());
        }
        self.send_events(id, chunk.through, events).await
    }

    async fn cancel_compacted(&mut self, id: i64) -> Result<(), End> {
        let Some(watcher) = self.watchers.get_mut(&id) else { return Ok(()) };
        watcher.cursor.compacted();
        let mut reply = self.response(0, id);
        reply.canceled = true;
        reply.compact_revision = self.shared.store.compacted_revision();
        self.send(reply).await
    }

    async fn send_events(&mut self, id: i64, revision: i64, events: Vec<mvccpb::Event>) -> Result<(), End> {
        let Some(watcher) = self.watchers.get_mut(&id) else { return Ok(()) };
        watcher.progress_due = false;
        let fragment = watcher.fragment;
        let response = pb::WatchResponse { events, ..self.response(revision, id) };
        if !fragment {
            return self.send(response).await;
        }
        for piece in fragments(response, self.shared.max_request_bytes + FRAGMENT_OVERHEAD_BYTES) {
            self.send(piece).await?;
        }
        Ok(())
    }
}

/// etcd's `sendFragments`: a response of at least `limit` bytes with two or more events
/// is cut into pieces that each stay under `limit` (a piece always holds at least one
/// event); every piece but the last has `fragment` set.
fn fragments(response: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    if response.encoded_len() < limit || response.events.len() < 2 {
        return vec![response];
    }
    let mut template = response;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base = template.encoded_len();
    let mut pieces = Vec::new();
    let mut current = template.clone();
    let mut size = base;
    for event in events {
        let len = event.encoded_len();
        // Field 11, length-delimited: one tag byte, the length, the message.
        let cost = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !current.events.is_empty() && size + cost >= limit {
            pieces.push(std::mem::replace(&mut current, template.clone()));
            size = base;
        }
        current.events.push(event);
        size += cost;
    }
    current.fragment = false;
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_event(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue { key: key.into(), value: vec![b'v'; value_len], ..Default::default() }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_stay_under_the_limit_and_only_the_last_is_unmarked() {
        let response = pb::WatchResponse {
            watch_id: 3,
            events: (0..10).map(|i| put_event(&format!("k{i}"), 300)).collect(),
            ..Default::default()
        };
        let pieces = fragments(response.clone(), 1000);
        assert!(pieces.len() > 1, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.encoded_len() < 1000));
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.fragment));
        assert!(!pieces.last().expect("a piece").fragment);
        let events: Vec<_> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(events, response.events);
        // Small enough, or a single event: sent whole.
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response.clone()]);
        let one = pb::WatchResponse { events: vec![put_event("k", 5000)], ..Default::default() };
        assert_eq!(fragments(one.clone(), 1000), vec![one]);
    }
}
