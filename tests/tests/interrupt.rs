//! A lab dropped after Ctrl-C still removes its namespaces: teardown commands finish even with
//! the interrupt flag raised. A test binary of its own, because the flag is process-wide and
//! stays raised. Needs root.

use std::sync::atomic::Ordering;

use vfn_lab::{Lab, TopologySpec};

#[test]
fn a_lab_dropped_after_an_interrupt_removes_its_namespaces() {
    vfn_lab::remove_stale("vfnintr").expect("remove namespaces of crashed runs");
    let flag = vfn_lab::install_interrupt_flag().expect("flag");
    let lab = Lab::create(&TopologySpec::default_lab("vfnintr")).expect("lab");
    let ours = |name: &String| name.starts_with(&lab.topology().name);
    let made = vfn_lab::list_namespaces()
        .expect("list")
        .iter()
        .filter(|n| ours(n))
        .count();
    assert!(made >= 3, "the lab made its namespaces");
    let prefix = lab.topology().name.clone();
    // As Ctrl-C would.
    flag.store(true, Ordering::SeqCst);
    drop(lab);
    let left: Vec<String> = vfn_lab::list_namespaces()
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
