//! Entry lists and limits that `build` refuses, each with an error naming the reason.

use vfn_classify::{
    BuildError, Classifier, Classifier6, DEPTH_MAX_SUPPORTED, Entry, Key, Limits, Match, Range,
};

fn entry(priority: u32, dst: u32) -> Entry<u32> {
    Entry {
        priority,
        m: Match {
            src: Range {
                lo: 0,
                hi: u32::MAX,
            },
            dst: Range { lo: dst, hi: dst },
            sport: Range {
                lo: 0,
                hi: u16::MAX,
            },
            dport: Range { lo: 80, hi: 80 },
            proto: Some(6),
            ingress: None,
            tcp_flags: None,
        },
    }
}

#[test]
fn refuses_more_entries_than_the_limit() {
    let entries: Vec<_> = (0..11).map(|i| entry(i, i)).collect();
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let error = Classifier::build(&entries, &limits).expect_err("too many");
    assert_eq!(
        error,
        BuildError::TooManyEntries {
            count: 11,
            max_entries: 10
        }
    );
    assert!(error.to_string().contains("limit of 10"));
    assert!(Classifier::build(&entries[..10], &limits).is_ok());
}

#[test]
fn refuses_an_empty_range_naming_entry_and_field() {
    let mut entries = vec![entry(0, 1), entry(1, 2)];
    entries[1].m.sport = Range { lo: 10, hi: 9 };
    let error = Classifier::build(&entries, &Limits::default()).expect_err("empty range");
    assert_eq!(
        error,
        BuildError::EmptyRange {
            entry_index: 1,
            field: "sport"
        }
    );
    assert_eq!(
        error.to_string(),
        "entry 1: the sport range is empty (lo > hi)"
    );
    let mut v6 = vec![Entry {
        priority: 0,
        m: Match {
            src: Range { lo: 5u128, hi: 4 },
            dst: Range {
                lo: 0,
                hi: u128::MAX,
            },
            sport: Range { lo: 0, hi: 0 },
            dport: Range { lo: 0, hi: 0 },
            proto: None,
            ingress: None,
            tcp_flags: None,
        },
    }];
    let error = Classifier6::build(&v6, &Limits::default()).expect_err("empty range");
    assert_eq!(
        error,
        BuildError::EmptyRange {
            entry_index: 0,
            field: "src"
        }
    );
    v6[0].m.src = Range { lo: 4, hi: 5 };
    assert!(Classifier6::build(&v6, &Limits::default()).is_ok());
}

#[test]
fn refuses_a_structure_above_the_memory_limit() {
    let entries: Vec<_> = (0..2000).map(|i| entry(i, i * 7919)).collect();
    let limits = Limits {
        max_memory_bytes: 64 * 1024,
        ..Limits::default()
    };
    match Classifier::build(&entries, &limits) {
        Err(BuildError::MemoryLimit {
            needed_bytes,
            max_memory_bytes,
        }) => {
            assert_eq!(max_memory_bytes, 64 * 1024);
            assert!(needed_bytes > max_memory_bytes);
        }
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    let built = Classifier::build(&entries, &Limits::default()).expect("fits the default");
    assert!(built.memory_bytes() > 64 * 1024);
}

#[test]
fn refuses_unsupported_limits() {
    let cases = [
        (
            Limits {
                max_depth: 0,
                ..Limits::default()
            },
            "max_depth",
        ),
        (
            Limits {
                max_depth: DEPTH_MAX_SUPPORTED + 1,
                ..Limits::default()
            },
            "max_depth",
        ),
        (
            Limits {
                max_entries: 0,
                ..Limits::default()
            },
            "max_entries",
        ),
        (
            Limits {
                max_memory_bytes: 0,
                ..Limits::default()
            },
            "max_memory_bytes",
        ),
        (
            Limits {
                max_memory_bytes: usize::MAX,
                ..Limits::default()
            },
            "max_memory_bytes",
        ),
    ];
    for (limits, field) in cases {
        match Classifier::build(&[entry(0, 1)], &limits) {
            Err(BuildError::InvalidLimit { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{field}: expected an invalid limit error, got {other:?}"),
        }
    }
}

/// A depth limit of 1 still classifies correctly: what a cut cannot separate stays in leaves.
#[test]
fn a_shallow_depth_limit_stays_exact() {
    let entries: Vec<_> = (0..500).map(|i| entry(i, i % 97)).collect();
    let limits = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    let classifier = Classifier::build(&entries, &limits).expect("builds");
    assert!(classifier.build_stats().depth_reached <= 1);
    for dst in 0..100 {
        let key = Key {
            src: 1,
            dst,
            sport: 1,
            dport: 80,
            proto: 6,
            ingress: 0,
            tcp_flags: 0,
        };
        assert_eq!(
            classifier.classify(&key),
            vfn_classify::linear_reference(&entries, &key)
        );
    }
}

#[test]
fn empty_set_matches_nothing() {
    let classifier = Classifier::<u32>::build(&[], &Limits::default()).expect("builds");
    assert_eq!(classifier.entry_count(), 0);
    assert_eq!(classifier.classify(&Key::default()), None);
    let mut out = [Some(1); 3];
    classifier.classify_burst(&[Key::default(); 3], &mut out);
    assert_eq!(out, [None; 3]);
}
