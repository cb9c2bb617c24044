//! The engine's decisions from given scores: evidence over a window, one action per source while
//! it lasts, segment impact and thresholds.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use vfn_models::{
    Engine, EngineConfig, FlowContext, FlowScore, Segment, SegmentImpact, ThreatAction,
    ThreatConfig, ThreatWeights,
};

fn address(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn flow(src: &str, dst: &str, dport: u16) -> FlowContext {
    FlowContext {
        src: address(src),
        dst: address(dst),
        sport: 40_000,
        dport,
        proto: 6,
    }
}

/// A score whose anomaly and persona risk are both `level`, mostly persona 1.
fn score(level: f64) -> FlowScore {
    let mut score = FlowScore {
        anomaly: level,
        persona_risk: level,
        ..FlowScore::default()
    };
    score.persona_probabilities[..2].copy_from_slice(&[0.2, 0.8]);
    score
}

fn config() -> EngineConfig {
    EngineConfig {
        threat: ThreatConfig {
            weights: ThreatWeights {
                anomaly: 0.5,
                impact: 0.2,
                confidence: 0.3,
            },
            threshold: 0.7,
        },
        flows_to_act: 3,
        window: Duration::from_secs(10),
        action: ThreatAction::Isolate,
        action_ttl: Duration::from_secs(60),
        sources_max: 16,
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_source_is_acted_on_at_its_nth_hostile_flow_once_while_the_action_lasts() {
    let mut engine = Engine::new(config());
    let scanner = |port| flow("198.18.0.10", "198.18.1.2", port);
    assert_eq!(engine.observe(&scanner(1), &score(0.99), 2, SECOND), None);
    assert_eq!(engine.observe(&scanner(2), &score(0.99), 2, SECOND), None);
    let decision = engine
        .observe(&scanner(3), &score(0.99), 2, 2 * SECOND)
        .expect("the third hostile flow decides");
    assert_eq!(decision.source, address("198.18.0.10"));
    assert_eq!(decision.action, ThreatAction::Isolate);
    assert_eq!(decision.evidence, 3);
    assert_eq!(decision.persona, 1);
    // 0.5 × 0.99 + 0.2 × 0 + 0.3 × 0.99 (no segment holds the destination).
    assert!(
        (decision.threat - 0.792).abs() < 1e-9,
        "{}",
        decision.threat
    );
    for port in 4..20 {
        assert_eq!(
            engine.observe(&scanner(port), &score(0.99), 2, 3 * SECOND),
            None
        );
    }
    // Once the action expired, fresh evidence acts on the source again.
    assert_eq!(
        engine.observe(&scanner(21), &score(0.99), 2, 63 * SECOND),
        None
    );
    assert_eq!(
        engine.observe(&scanner(22), &score(0.99), 2, 63 * SECOND),
        None
    );
    assert!(
        engine
            .observe(&scanner(23), &score(0.99), 2, 63 * SECOND)
            .is_some()
    );
}

#[test]
fn hostile_flows_spread_over_more_than_the_window_do_not_add_up() {
    let mut engine = Engine::new(config());
    let odd = flow("198.18.0.11", "198.18.1.2", 443);
    for second in [0, 11, 22, 33, 44] {
        assert_eq!(engine.observe(&odd, &score(0.99), 2, second * SECOND), None);
    }
}

#[test]
fn normal_flows_and_other_sources_are_left_alone() {
    let mut engine = Engine::new(config());
    let scanner = flow("198.18.0.10", "198.18.1.2", 22);
    let normal = flow("198.18.0.20", "198.18.1.2", 80);
    for _ in 0..100 {
        assert_eq!(engine.observe(&normal, &score(0.3), 2, SECOND), None);
    }
    for _ in 0..2 {
        assert_eq!(engine.observe(&scanner, &score(0.99), 2, SECOND), None);
    }
    assert_eq!(engine.observe(&normal, &score(0.99), 2, SECOND), None);
    let sources: Vec<_> = engine.sources().map(|(source, _)| *source).collect();
    assert_eq!(sources.len(), 2);
}

#[test]
fn a_critical_segment_adds_impact_and_its_own_threshold_applies() {
    let mut engine = Engine::new(EngineConfig {
        flows_to_act: 1,
        ..config()
    });
    engine.set_segments(Arc::new(SegmentImpact::new([
        (
            Segment {
                name: "db".into(),
                criticality: 10,
                threshold: None,
            },
            vec!["198.18.1.0/24".parse().expect("prefix")],
        ),
        (
            Segment {
                name: "lab".into(),
                criticality: 0,
                threshold: Some(0.6),
            },
            vec!["198.18.0.0/15".parse().expect("prefix")],
        ),
    ])));
    // 0.5 × 0.8 + 0.2 × 1 + 0.3 × 0.8 = 0.84 against the default 0.7: acted on.
    let decision = engine
        .observe(
            &flow("198.18.0.10", "198.18.1.9", 5432),
            &score(0.8),
            2,
            SECOND,
        )
        .expect("a flow into db decides");
    assert_eq!(decision.segment.as_deref(), Some("db"));
    assert!((decision.terms.impact - 1.0).abs() < 1e-9);
    // The same scores into the wider segment: 0.64, under the default 0.7 but over the
    // segment's own 0.6.
    let decision = engine
        .observe(
            &flow("198.18.0.12", "198.18.2.9", 80),
            &score(0.8),
            2,
            SECOND,
        )
        .expect("the segment's own threshold decides");
    assert_eq!(decision.segment.as_deref(), Some("lab"));
    assert!((decision.threshold - 0.6).abs() < 1e-9);
    assert_eq!(
        engine.observe(
            &flow("198.18.0.13", "2001:2::1", 80),
            &score(0.8),
            2,
            SECOND
        ),
        None,
        "outside every segment: 0.64 under the default 0.7"
    );
}

#[test]
fn a_full_source_table_forgets_quiet_sources_first() {
    let mut engine = Engine::new(EngineConfig {
        sources_max: 2,
        ..config()
    });
    engine.observe(
        &flow("198.18.0.1", "198.18.1.1", 80),
        &score(0.1),
        2,
        SECOND,
    );
    engine.observe(
        &flow("198.18.0.2", "198.18.1.1", 80),
        &score(0.1),
        2,
        SECOND,
    );
    engine.observe(
        &flow("198.18.0.3", "198.18.1.1", 80),
        &score(0.1),
        2,
        2 * SECOND,
    );
    assert_eq!(engine.sources_untracked, 1, "both others are recent");
    engine.observe(
        &flow("198.18.0.3", "198.18.1.1", 80),
        &score(0.1),
        2,
        100 * SECOND,
    );
    assert_eq!(engine.sources_untracked, 1, "quiet sources were forgotten");
    assert_eq!(engine.sources().count(), 1);
}

#[test]
fn a_flow_counts_once_however_many_snapshots_it_gives() {
    let mut engine = Engine::new(config());
    let long = flow("198.18.0.10", "198.18.1.2", 443);
    // Snapshots at 4, 8, 16, 32, 64 packets and the end: one flow.
    for _ in 0..6 {
        assert_eq!(engine.observe(&long, &score(0.99), 2, SECOND), None);
    }
    let (_, view) = engine.sources().next().expect("the source");
    assert_eq!(view.evidence(SECOND, Duration::from_secs(10)), 1);
    assert_eq!(
        view.evidence(20 * SECOND, Duration::from_secs(10)),
        0,
        "the window passed"
    );
    // Two more flows make three: acted on.
    assert_eq!(
        engine.observe(
            &flow("198.18.0.10", "198.18.1.2", 22),
            &score(0.99),
            2,
            SECOND
        ),
        None
    );
    assert!(
        engine
            .observe(
                &flow("198.18.0.10", "198.18.1.2", 23),
                &score(0.99),
                2,
                SECOND
            )
            .is_some()
    );
}

#[test]
fn a_decision_not_carried_out_lets_the_next_hostile_flow_decide() {
    let mut engine = Engine::new(EngineConfig {
        flows_to_act: 1,
        ..config()
    });
    let source = address("198.18.0.10");
    assert!(
        engine
            .observe(
                &flow("198.18.0.10", "198.18.1.2", 1),
                &score(0.99),
                2,
                SECOND
            )
            .is_some()
    );
    assert_eq!(
        engine.observe(
            &flow("198.18.0.10", "198.18.1.2", 2),
            &score(0.99),
            2,
            SECOND
        ),
        None
    );
    engine.undo_decision(source);
    assert!(
        engine
            .observe(
                &flow("198.18.0.10", "198.18.1.2", 3),
                &score(0.99),
                2,
                SECOND
            )
            .is_some()
    );
}
