//! The classic ways a replicated store goes wrong; each must be caught, blamed on the
//! right key, and shrunk to the operations that show it.

mod common;

use common::{assert_violation_on, ids, Scenario};
use concord_check::{check, check_with, CheckOptions, Violation};

/// Operations on another key, to check that they do not leak into the report.
fn unrelated_traffic(s: &mut Scenario) {
    s.put(7, "other", "z", (1, 2));
    s.get(8, "other", (3, 4), Some("z"));
}

#[test]
fn stale_read() {
    let mut s = Scenario::new();
    unrelated_traffic(&mut s);
    s.get(3, "x", (0, 1), None);
    let first = s.put(1, "x", "a", (1, 2));
    let second = s.put(1, "x", "b", (3, 4));
    let stale = s.get(2, "x", (5, 6), Some("a"));
    s.get(3, "x", (7, 8), Some("b"));

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [first, second, stale]);
}

#[test]
fn lost_write() {
    let mut s = Scenario::new();
    unrelated_traffic(&mut s);
    let acknowledged = s.put(1, "x", "a", (1, 2));
    let unaware = [s.get(2, "x", (3, 4), None), s.get(2, "x", (5, 6), None), s.get(3, "x", (7, 8), None)];

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(reported.len(), 2, "{reported:#?}");
    assert_eq!(reported[0].id, acknowledged);
    assert!(unaware.contains(&reported[1].id));
}

#[test]
fn reads_going_back_in_time() {
    let mut s = Scenario::new();
    let a = s.put(1, "x", "a", (1, 10));
    let b = s.put(2, "x", "b", (2, 9));
    let newer = s.get(3, "x", (11, 12), Some("b"));
    let older = s.get(4, "x", (13, 14), Some("a"));

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [a, b, newer, older]);
}

#[test]
fn compare_and_set_against_a_value_that_was_not_current() {
    let mut s = Scenario::new();
    let a = s.put(1, "x", "a", (1, 2));
    let b = s.put(1, "x", "b", (3, 4));
    let cas = s.cas(2, "x", (Some("a"), "c"), (5, 6), true);

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [a, b, cas]);
}

#[test]
fn compare_and_set_that_failed_although_it_matched() {
    let mut s = Scenario::new();
    let a = s.put(1, "x", "a", (1, 2));
    let cas = s.cas(2, "x", (Some("a"), "c"), (3, 4), false);

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [a, cas]);
}

#[test]
fn failed_write_observed_anyway() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put_failed(2, "x", "b", 3);
    let observer = s.get(3, "x", (5, 6), Some("b"));

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [observer]);
}

#[test]
fn unanswered_write_observed_before_it_was_invoked() {
    let mut s = Scenario::new();
    let early = s.get(1, "x", (1, 2), Some("a"));
    let write = s.put_unanswered(2, "x", "a", 3);

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [early, write]);
}

#[test]
fn the_violating_key_is_named_among_healthy_ones() {
    let mut s = Scenario::new();
    for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let t = 10 * i as u64;
        s.put(1, key, "v1", (t, t + 1));
        s.put(1, key, "v2", (t + 2, t + 3));
        let observed = if key == "c" { "v1" } else { "v2" };
        s.get(2, key, (t + 4, t + 5), Some(observed));
    }
    assert_violation_on(&s.history, "c");
}

#[test]
fn the_report_lists_each_operation_on_its_own_line_in_invocation_order() {
    let mut s = Scenario::new();
    s.put(1, "x", "a", (1, 2));
    s.put(2, "x", "b", (3, 4));
    s.get(3, "x", (5, 6), Some("a"));

    let violation = check(&s.history).unwrap_err();
    assert_eq!(
        violation.to_string(),
        "the history of key \"x\" is not linearizable: no order of these 3 operations \
         explains what the clients were told:\n  \
         client 1, invoked 1, completed 2: put \"x\" = \"a\" -> ok\n  \
         client 2, invoked 3, completed 4: put \"x\" = \"b\" -> ok\n  \
         client 3, invoked 5, completed 6: get \"x\" -> \"a\""
    );
    let as_error: &dyn std::error::Error = &violation;
    assert!(as_error.source().is_none());
}

#[test]
fn running_out_of_states_is_inconclusive_not_linearizable() {
    let mut s = Scenario::new();
    for i in 0..10 {
        s.put(1, "x", &format!("v{i}"), (10 * i, 10 * i + 1));
        s.get(2, "x", (10 * i + 2, 10 * i + 3), Some(&format!("v{i}")));
    }
    let tight = CheckOptions { max_states_per_key: 5 };
    match check_with(&s.history, tight) {
        Err(violation @ Violation::Inconclusive { .. }) => {
            assert_eq!(violation.key(), "x");
            assert!(violation.to_string().contains("could not decide"), "{violation}");
        }
        other => panic!("expected an inconclusive check, got {other:?}"),
    }
    assert!(check(&s.history).is_ok());
}

#[test]
fn a_definite_violation_wins_over_an_inconclusive_key() {
    let mut s = Scenario::new();
    for i in 0..10 {
        s.put(1, "a", &format!("v{i}"), (10 * i, 10 * i + 1));
    }
    s.put(1, "b", "v1", (0, 1));
    s.get(1, "b", (2, 3), Some("v2"));
    let tight = CheckOptions { max_states_per_key: 5 };
    let violation = check_with(&s.history, tight).unwrap_err();
    assert!(matches!(violation, Violation::NotLinearizable { .. }));
    assert_eq!(violation.key(), "b");
}

#[test]
fn bystanders_that_also_saw_the_newer_write_are_not_reported() {
    let mut s = Scenario::new();
    let older = s.put(1, "x", "a", (1, 4));
    let newer = s.put(2, "x", "b", (13, 18));
    s.cas(3, "x", (Some("b"), "c"), (20, 24), true);
    s.get(5, "x", (25, 26), Some("c"));
    let stale = s.get(4, "x", (30, 34), Some("a"));

    let reported = assert_violation_on(&s.history, "x");
    assert_eq!(ids(&reported), [older, newer, stale]);
}
