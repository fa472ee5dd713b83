//! The simulated network: messages in flight with random delays, loss, duplication, and
//! partitions.
//!
//! Each message gets a delivery step drawn when it is sent; delivering in step order
//! reorders messages for free. A partition is a set of blocked directed links (both
//! directions for a symmetric cut, one for an asymmetric one), checked at delivery time,
//! so a partition also swallows messages that were already on the wire.

use std::collections::{BTreeMap, BTreeSet};

use concord_raft::{Message, NodeId};

use crate::rng::SimRng;
use crate::trace::{DropReason, Event, MessageSummary, Trace};

/// How badly the network behaves. Delays are in simulation steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkProfile {
    pub drop_per_million: u32,
    pub duplicate_per_million: u32,
    /// Usual delay range, inclusive. `min_delay` is at least 1.
    pub min_delay: u64,
    pub max_delay: u64,
    /// Chance that a message is held much longer (up to `spike_max_delay`): long enough to
    /// arrive after an election it predates.
    pub spike_per_million: u32,
    pub spike_max_delay: u64,
    /// A node whose links are slow (0: none): every message to or from it takes up to
    /// `slow_extra_delay` steps longer.
    pub slow_node: NodeId,
    pub slow_extra_delay: u64,
    /// Deliver the messages of each link in the order they were sent (a healthy
    /// stream): no message overtakes an earlier one on the same link.
    pub fifo: bool,
}

impl NetworkProfile {
    /// A well-behaved network, used once faults stop: fast, lossless and in order.
    pub const CALM: NetworkProfile = NetworkProfile {
        drop_per_million: 0,
        duplicate_per_million: 0,
        min_delay: 1,
        max_delay: 3,
        spike_per_million: 0,
        spike_max_delay: 3,
        slow_node: 0,
        slow_extra_delay: 0,
        fifo: true,
    };

    fn delay(&self, message: &Message, rng: &mut SimRng) -> u64 {
        let delay = if rng.chance(self.spike_per_million) {
            rng.between(self.max_delay, self.spike_max_delay.max(self.max_delay))
        } else {
            rng.between(self.min_delay.max(1), self.max_delay.max(1))
        };
        let slow = self.slow_node != 0 && (message.from == self.slow_node || message.to == self.slow_node);
        if slow {
            delay + rng.between(0, self.slow_extra_delay)
        } else {
            delay
        }
    }
}

#[derive(Debug, Default)]
pub struct Network {
    /// Messages by (delivery step, send sequence number).
    in_flight: BTreeMap<(u64, u64), Message>,
    next_sequence: u64,
    /// Directed links `(from, to)` that currently lose everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// For a FIFO profile: the latest delivery step scheduled on each link.
    last_delivery: BTreeMap<(NodeId, NodeId), u64>,
}

impl Network {
    /// Most messages in flight at once; beyond it new messages are dropped (a full
    /// buffer), which keeps a runaway run bounded.
    pub const MAX_IN_FLIGHT: usize = 50_000;

    /// Puts `message` on the wire at step `now` (or loses or duplicates it).
    pub fn send(&mut self, now: u64, message: Message, profile: &NetworkProfile, rng: &mut SimRng, trace: &mut Trace) {
        let summary = MessageSummary::of(&message);
        if self.in_flight.len() >= Self::MAX_IN_FLIGHT {
            trace.record(now, Event::Drop(summary, DropReason::NetworkFull));
            return;
        }
        if rng.chance(profile.drop_per_million) {
            trace.record(now, Event::Drop(summary, DropReason::Lost));
            return;
        }
        trace.record(now, Event::Send(summary));
        if rng.chance(profile.duplicate_per_million) {
            trace.record(now, Event::Duplicate(summary));
            let at = now + profile.delay(&message, rng);
            self.enqueue(at, message.clone());
        }
        let mut at = now + profile.delay(&message, rng);
        if profile.fifo {
            // Same step: delivered in send order (the queue breaks ties by sequence).
            let last = self.last_delivery.entry((message.from, message.to)).or_insert(0);
            at = at.max(*last);
            *last = at;
        }
        self.enqueue(at, message);
    }

    fn enqueue(&mut self, at: u64, message: Message) {
        self.in_flight.insert((at, self.next_sequence), message);
        self.next_sequence += 1;
    }

    /// The next message due at or before `now` whose link is open; messages on cut links
    /// are dropped on the way. `None` once nothing more is due.
    pub fn pop_due(&mut self, now: u64, trace: &mut Trace) -> Option<Message> {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                return None;
            }
            let message = entry.remove();
            if self.is_blocked(message.from, message.to) {
                trace.record(now, Event::Drop(MessageSummary::of(&message), DropReason::Partitioned));
                continue;
            }
            return Some(message);
        }
        None
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Cuts the link `from -> to` (one direction only).
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Cuts every link between the two groups, in both directions.
    pub fn split(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn has_partition(&self) -> bool {
        !self.blocked.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_raft::MessageBody;

    fn message(from: NodeId, to: NodeId) -> Message {
        Message { from, to, term: 1, body: MessageBody::TimeoutNow }
    }

    #[test]
    fn delivers_in_due_order_and_respects_partitions_at_delivery() {
        let mut network = Network::default();
        let mut rng = SimRng::new(1);
        let mut trace = Trace::new(false);
        let profile = NetworkProfile { min_delay: 5, max_delay: 5, ..NetworkProfile::CALM };
        network.send(0, message(1, 2), &profile, &mut rng, &mut trace);
        network.send(0, message(2, 1), &profile, &mut rng, &mut trace);
        assert!(network.pop_due(4, &mut trace).is_none());
        network.block(1, 2);
        let delivered = network.pop_due(5, &mut trace).expect("2 -> 1 is open");
        assert_eq!((delivered.from, delivered.to), (2, 1));
        assert!(network.pop_due(5, &mut trace).is_none());
        assert_eq!(network.in_flight(), 0);
        network.heal();
        assert!(!network.has_partition());
    }

    #[test]
    fn a_fifo_network_keeps_each_link_in_order() {
        let mut network = Network::default();
        let mut rng = SimRng::new(5);
        let mut trace = Trace::new(false);
        let profile = NetworkProfile { min_delay: 1, max_delay: 20, ..NetworkProfile::CALM };
        for step in 0..50 {
            let mut m = message(1, 2);
            m.term = step;
            network.send(step, m, &profile, &mut rng, &mut trace);
        }
        let mut terms = Vec::new();
        for step in 0..100 {
            while let Some(m) = network.pop_due(step, &mut trace) {
                terms.push(m.term);
            }
        }
        assert_eq!(terms, (0..50).collect::<Vec<_>>());
    }
}
