//! The parts of `vfn-perf` that its tests use: the lab benchmark's traffic generator and sink.

pub mod traffic;
