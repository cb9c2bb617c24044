//! Every trace line of the 1k and 10k ClassBench sets, classified equal to the first-match scan,
//! by a structure under 100 bytes per rule.
//! The files are the project's shared material; a missing file fails the test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vfn_classify::classbench::{self, TracePacket};
use vfn_classify::{Classifier, Entry, Key, Limits, linear_reference};

fn classbench_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/classbench"
    ))
}

/// `name`, or `name.gen` (the sets generated with ClassBench's tools).
fn existing(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    if plain.is_file() {
        return plain;
    }
    let generated = dir.join(format!("{name}.gen"));
    assert!(
        generated.is_file(),
        "{} (or .gen) is missing: the ClassBench files belong in ../shared/classbench",
        plain.display()
    );
    generated
}

#[expect(
    clippy::panic,
    reason = "test helper: an unreadable file fails the test, naming it"
)]
fn load(set: &str) -> (Vec<Entry<u32>>, Vec<TracePacket>) {
    let dir = classbench_dir();
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let entries = classbench::parse_rules(&read(existing(&dir, set))).expect("rules parse");
    let trace = classbench::parse_trace(&read(existing(&dir, &format!("{set}_trace"))))
        .expect("trace parses");
    (entries, trace)
}

/// Checks every trace line. The expected answer is the first-match scan, computed once per
/// distinct key (traces repeat keys heavily), so that debug builds stay fast.
fn check_set(set: &str) {
    let (entries, trace) = load(set);
    assert!(!entries.is_empty() && !trace.is_empty(), "{set}: empty");
    let classifier = Classifier::build(&entries, &Limits::default()).expect("builds");
    let bytes_per_rule = classifier.memory_bytes() as f64 / entries.len() as f64;
    assert!(
        bytes_per_rule < 100.0,
        "{set}: {bytes_per_rule:.1} bytes per rule, over the budget of 100"
    );
    let mut expected: HashMap<Key<u32>, Option<u32>> = HashMap::new();
    let mut burst = vec![None; trace.len()];
    let keys: Vec<Key<u32>> = trace.iter().map(|packet| packet.key).collect();
    classifier.classify_burst(&keys, &mut burst);
    for (line, (packet, burst_answer)) in trace.iter().zip(&burst).enumerate() {
        let want = *expected
            .entry(packet.key)
            .or_insert_with(|| classbench::first_match(&entries, &packet.key));
        assert_eq!(
            classifier.classify(&packet.key),
            want,
            "{set} trace line {}",
            line + 1
        );
        assert_eq!(*burst_answer, want, "{set} trace line {} (burst)", line + 1);
        // ClassBench generated the packet from that rule, so it matches at or before it.
        assert!(
            want.is_some_and(|first| first <= packet.generating_rule),
            "{set} line {}",
            line + 1
        );
    }
}

#[test]
fn acl1_1k() {
    check_set("acl1_1k");
}

#[test]
fn fw1_1k() {
    check_set("fw1_1k");
}

#[test]
fn ipc1_1k() {
    check_set("ipc1_1k");
}

#[test]
fn acl1_10k() {
    check_set("acl1_10k");
}

#[test]
fn fw1_10k() {
    check_set("fw1_10k");
}

#[test]
fn ipc1_10k() {
    check_set("ipc1_10k");
}

/// `first_match` (the fast expected answer above) is the linear reference for parsed sets.
#[test]
fn first_match_is_the_linear_reference() {
    let (entries, trace) = load("fw1_1k");
    for packet in trace.iter().step_by(7) {
        assert_eq!(
            classbench::first_match(&entries, &packet.key),
            linear_reference(&entries, &packet.key)
        );
    }
}
