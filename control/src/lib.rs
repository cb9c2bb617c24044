//! The VFN's control API, shared by the router (`vfn`, which serves it) and `vfnctl` (which
//! calls it): the generated gRPC code, the conversions between its messages and the rule model,
//! and the audit log's format and verification.

pub mod audit;
pub mod convert;
pub mod persist;

/// The generated messages and services of `proto/vfn/v1/vfn.proto`.
pub mod proto {
    #![allow(clippy::all, clippy::unwrap_used, clippy::panic)]
    tonic::include_proto!("vfn.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vfn_descriptor.bin"));
}
