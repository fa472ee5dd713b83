//! The time-ordered list of call and return events that the search walks (Lowe's list).
//!
//! Every answered operation contributes a call event at its invocation and a return event
//! at its completion, all sorted by time, calls before returns at equal times (an
//! operation completing at `t` does not precede one invoked at `t`). The operations that
//! may be linearized next are exactly the calls before the first return: they were
//! invoked before every operation still to be linearized completed.
//!
//! Linearizing an operation unlinks both its events; backtracking relinks them. The
//! search undoes strictly in reverse order, so a doubly linked list over arrays can relink
//! a node in O(1) from the neighbour pointers it kept ("dancing links").

/// One position in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The invocation of the answered operation with this index.
    Call(usize),
    /// A completion at this time.
    Return(u64),
    /// Past the last event.
    End,
}

#[derive(Clone, Copy, Debug)]
enum Node {
    Head,
    Call(usize),
    Return(u64),
    Tail,
}

/// Node positions are indices into the arrays below; 0 is the head sentinel.
#[derive(Clone, Debug)]
pub(crate) struct CallList {
    nodes: Vec<Node>,
    next: Vec<usize>,
    previous: Vec<usize>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

const HEAD: usize = 0;

impl CallList {
    /// Builds the list for operations given as (invoked_at, completed_at), indexed by
    /// their position in `intervals`.
    pub(crate) fn new(intervals: &[(u64, u64)]) -> Self {
        const CALL_FIRST: u8 = 0;
        const RETURN_AFTER: u8 = 1;
        let mut events: Vec<(u64, u8, usize)> = intervals
            .iter()
            .enumerate()
            .flat_map(|(op, &(invoked, completed))| [(invoked, CALL_FIRST, op), (completed, RETURN_AFTER, op)])
            .collect();
        events.sort_unstable();

        let mut nodes = Vec::with_capacity(events.len() + 2);
        let mut call_node = vec![0; intervals.len()];
        let mut return_node = vec![0; intervals.len()];
        nodes.push(Node::Head);
        for (time, kind, op) in events {
            if kind == CALL_FIRST {
                call_node[op] = nodes.len();
                nodes.push(Node::Call(op));
            } else {
                return_node[op] = nodes.len();
                nodes.push(Node::Return(time));
            }
        }
        nodes.push(Node::Tail);
        let count = nodes.len();
        Self {
            nodes,
            next: (1..=count).collect(),
            previous: (0..count).map(|i| i.saturating_sub(1)).collect(),
            call_node,
            return_node,
        }
    }

    /// The first node after the head.
    pub(crate) fn first(&self) -> usize {
        self.next[HEAD]
    }

    /// The node after `node`; for a node that is unlinked, the one it was linked before.
    pub(crate) fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    pub(crate) fn entry(&self, node: usize) -> Entry {
        match self.nodes[node] {
            Node::Call(op) => Entry::Call(op),
            Node::Return(time) => Entry::Return(time),
            Node::Head | Node::Tail => Entry::End,
        }
    }

    /// The node of `op`'s call event.
    pub(crate) fn call_of(&self, op: usize) -> usize {
        self.call_node[op]
    }

    /// The earliest completion among the operations still in the list.
    pub(crate) fn frontier(&self) -> Option<u64> {
        let mut node = self.first();
        loop {
            match self.entry(node) {
                Entry::Call(_) => node = self.next(node),
                Entry::Return(time) => return Some(time),
                Entry::End => return None,
            }
        }
    }

    /// Removes `op`'s call and return events.
    pub(crate) fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.return_node[op]);
    }

    /// Undoes the most recent [`lift`](Self::lift) not yet undone, which must be `op`'s.
    pub(crate) fn unlift(&mut self, op: usize) {
        self.relink(self.return_node[op]);
        self.relink(self.call_node[op]);
    }

    fn unlink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        self.previous[next] = previous;
    }

    fn relink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        self.previous[next] = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &CallList) -> Vec<Entry> {
        let mut node = list.first();
        let mut seen = Vec::new();
        while list.entry(node) != Entry::End {
            seen.push(list.entry(node));
            node = list.next(node);
        }
        seen
    }

    #[test]
    fn orders_events_by_time_with_calls_first() {
        let list = CallList::new(&[(1, 3), (3, 4)]);
        assert_eq!(entries(&list), [Entry::Call(0), Entry::Call(1), Entry::Return(3), Entry::Return(4)]);
        assert_eq!(list.frontier(), Some(3));
    }

    #[test]
    fn lift_and_unlift_restore_the_list() {
        let mut list = CallList::new(&[(1, 5), (2, 3), (4, 6)]);
        let before = entries(&list);
        list.lift(1);
        assert_eq!(list.frontier(), Some(5));
        list.lift(0);
        assert_eq!(entries(&list), [Entry::Call(2), Entry::Return(6)]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!(entries(&list), before);
        assert_eq!(list.entry(list.next(list.call_of(1))), Entry::Return(3));
    }
}
