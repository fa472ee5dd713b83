//! Histories that are linearizable and must be accepted: one per way a correct store can
//! legitimately surprise a naive checker.

mod common;

use common::{assert_linearizable, Scenario};

#[test]
fn an_empty_history_is_linearizable() {
    let report = assert_linearizable(&Scenario::new().history);
    assert_eq!((report.operations, report.keys), (0, 0));
}

#[test]
fn a_sequential_history_is_linearizable() {
    let mut s = Scenario::new();
    s.get(1, "x", (1, 2), None);
    s.put(1, "x", "a", (3, 4));
    s.get(2, "x", (5, 6), Some("a"));
    s.put(2, "x", "b", (7, 8));
    s.get(1, "x", (9, 10), Some("b"));
    let report = assert_linearizable(&s.history);
    assert_eq!((report.operations, report.keys), (5, 1));
}

#[test]
fn overlapping_writes_may_be_read_in_either_order() {
    for (first_read, second_read) in [("a", "b"), ("b", "a")] {
        let mut s = Scenario::new();
        s.put(1, "x", "a", (1, 10));
        s.put(2, "x", "b", (2, 9));
        s.get(3, "x", (3, 4), Some(first_read));
        s.get(3, "x", (11, 12), Some(second_read));
        assert_linearizable(&s.history);
    }
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    for observed in [None, Some("a")] {
        let mut s = Scenario::new();
        s.put(1, "x", "a", (1, 5));
        s.get(2, "x", (2, 3), observed);
        assert_linearizable(&s.history);
    }
}

#[test]
fn an_unanswered_write_may_be_observed_later() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put_unanswered(2, "x", "b", 3);
    s.get(3, "x", (4, 5), Some("a"));
    s.get(3, "x", (100, 101), Some("b"));
    s.get(4, "x", (102, 103), Some("b"));
    assert_linearizable(&s.history);
}

#[test]
fn an_unanswered_write_may_never_take_effect() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put_unanswered(2, "x", "b", 3);
    s.get(3, "x", (4, 5), Some("a"));
    s.get(3, "x", (100, 101), Some("a"));
    assert_linearizable(&s.history);
}

#[test]
fn an_unanswered_read_is_ignored() {
    let mut s = Scenario::new();
    s.history.invoke(1, concord_check::Op::Get { key: "x".into() }, 1);
    s.put(2, "x", "a", (2, 3));
    let report = assert_linearizable(&s.history);
    assert_eq!(report.operations, 1);
}

#[test]
fn compare_and_set_succeeds_and_fails_against_the_current_value() {
    let mut s = Scenario::new();
    s.cas(1, "x", (None, "a"), (1, 2), true);
    s.cas(1, "x", (None, "b"), (3, 4), false);
    s.cas(2, "x", (Some("b"), "c"), (5, 6), false);
    s.cas(2, "x", (Some("a"), "c"), (7, 8), true);
    s.get(3, "x", (9, 10), Some("c"));
    assert_linearizable(&s.history);
}

#[test]
fn an_unanswered_compare_and_set_may_take_effect() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.cas_unanswered(2, "x", (Some("a"), "b"), 3);
    s.get(3, "x", (10, 11), Some("b"));
    assert_linearizable(&s.history);
}

#[test]
fn a_failed_compare_and_set_can_be_explained_by_an_unanswered_write() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put_unanswered(2, "x", "junk", 3);
    s.cas(3, "x", (Some("a"), "b"), (10, 11), false);
    assert_linearizable(&s.history);
}

#[test]
fn delete_makes_the_key_absent() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.delete(1, "x", (3, 4));
    s.get(2, "x", (5, 6), None);
    s.cas(2, "x", (None, "b"), (7, 8), true);
    s.get(1, "x", (9, 10), Some("b"));
    assert_linearizable(&s.history);
}

#[test]
fn failed_operations_are_ignored() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put_failed(2, "x", "b", 3);
    s.get(3, "x", (10, 11), Some("a"));
    let report = assert_linearizable(&s.history);
    assert_eq!(report.operations, 2);
}

#[test]
fn keys_are_independent() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put(1, "y", "a", (3, 4));
    s.get(2, "x", (5, 6), Some("a"));
    s.get(2, "y", (5, 6), Some("a"));
    let report = assert_linearizable(&s.history);
    assert_eq!(report.keys, 2);
}

#[test]
fn many_unanswered_writes_stay_cheap_when_unobserved() {
    // Each unanswered write could take effect anywhere; checked naively, the subsets of
    // them make the search exponential. Here every failed compare-and-set needs one of
    // them to have taken effect just before it.
    let mut s = Scenario::new();
    for client in 0..200 {
        s.put_unanswered(client, "x", &format!("lost-{client}"), client);
    }
    for round in 0..200 {
        let t = 1_000 + 10 * round;
        s.put(1, "x", "a", (t, t + 1));
        s.cas(2, "x", (Some("a"), "never"), (t + 2, t + 3), false);
    }
    let report = assert_linearizable(&s.history);
    assert!(report.states_explored < 10_000, "{report}");
}

#[test]
fn many_unanswered_writes_stay_cheap_when_observed_in_any_order() {
    let mut s = Scenario::new();
    for client in 0..200 {
        s.put_unanswered(client, "x", &format!("v{client}"), client);
    }
    for round in 0..200 {
        let t = 1_000 + 10 * round;
        let observed = format!("v{}", (round * 37) % 200);
        s.get(1, "x", (t, t + 1), Some(&observed));
    }
    let report = assert_linearizable(&s.history);
    assert!(report.states_explored < 10_000, "{report}");
}
