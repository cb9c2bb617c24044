//! The models' input vectors, as `models/features.json` defines them: the order of a block's
//! features and their transforms come from that file alone (compiled in), and this module
//! computes each feature by name from a flow's statistics. The training code reads the same file.

use serde::Deserialize;
use vfn_flow::FlowStats;

use crate::ModelError;

/// `models/features.json`, the one definition shared with the training code.
const DEFINITION: &str = include_str!("../features.json");

/// Features a block holds at most.
pub const FEATURES_MAX: usize = 64;

/// One feature the VFN computes from a flow's statistics; `docs/models.md` and
/// `models/features.json` define each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    DurationUs,
    FwdPackets,
    BwdPackets,
    FwdBytes,
    BwdBytes,
    FwdMeanSize,
    BwdMeanSize,
    ProtoTcp,
    ProtoUdp,
    ProtoIcmp,
    FwdLengthMax,
    FwdLengthStd,
    BwdLengthMax,
    BwdLengthStd,
    FlowIatMeanUs,
    FlowIatMaxUs,
    FlowIatStdUs,
    FwdIatMeanUs,
    BwdIatMeanUs,
    SynCount,
    FinCount,
    RstCount,
    PshCount,
    AckCount,
    FwdInitWindow,
    BwdInitWindow,
}

const ALL_FEATURES: [Feature; 26] = [
    Feature::DurationUs,
    Feature::FwdPackets,
    Feature::BwdPackets,
    Feature::FwdBytes,
    Feature::BwdBytes,
    Feature::FwdMeanSize,
    Feature::BwdMeanSize,
    Feature::ProtoTcp,
    Feature::ProtoUdp,
    Feature::ProtoIcmp,
    Feature::FwdLengthMax,
    Feature::FwdLengthStd,
    Feature::BwdLengthMax,
    Feature::BwdLengthStd,
    Feature::FlowIatMeanUs,
    Feature::FlowIatMaxUs,
    Feature::FlowIatStdUs,
    Feature::FwdIatMeanUs,
    Feature::BwdIatMeanUs,
    Feature::SynCount,
    Feature::FinCount,
    Feature::RstCount,
    Feature::PshCount,
    Feature::AckCount,
    Feature::FwdInitWindow,
    Feature::BwdInitWindow,
];

impl Feature {
    /// The feature's name in `features.json`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::DurationUs => "duration_us",
            Feature::FwdPackets => "fwd_packets",
            Feature::BwdPackets => "bwd_packets",
            Feature::FwdBytes => "fwd_bytes",
            Feature::BwdBytes => "bwd_bytes",
            Feature::FwdMeanSize => "fwd_mean_size",
            Feature::BwdMeanSize => "bwd_mean_size",
            Feature::ProtoTcp => "proto_tcp",
            Feature::ProtoUdp => "proto_udp",
            Feature::ProtoIcmp => "proto_icmp",
            Feature::FwdLengthMax => "fwd_length_max",
            Feature::FwdLengthStd => "fwd_length_std",
            Feature::BwdLengthMax => "bwd_length_max",
            Feature::BwdLengthStd => "bwd_length_std",
            Feature::FlowIatMeanUs => "flow_iat_mean_us",
            Feature::FlowIatMaxUs => "flow_iat_max_us",
            Feature::FlowIatStdUs => "flow_iat_std_us",
            Feature::FwdIatMeanUs => "fwd_iat_mean_us",
            Feature::BwdIatMeanUs => "bwd_iat_mean_us",
            Feature::SynCount => "syn_count",
            Feature::FinCount => "fin_count",
            Feature::RstCount => "rst_count",
            Feature::PshCount => "psh_count",
            Feature::AckCount => "ack_count",
            Feature::FwdInitWindow => "fwd_init_window",
            Feature::BwdInitWindow => "bwd_init_window",
        }
    }

    fn named(name: &str) -> Option<Feature> {
        ALL_FEATURES
            .into_iter()
            .find(|feature| feature.name() == name)
    }

    /// The feature's value for a flow of IP protocol `proto`, before its transform.
    pub fn raw_value(self, stats: &FlowStats, proto: u8) -> f64 {
        const NS_PER_US: f64 = 1e3;
        let (fwd, bwd) = (stats.forward(), stats.reverse());
        let mean_size = |bytes: u64, packets: u64| match packets {
            0 => 0.0,
            _ => bytes as f64 / packets as f64,
        };
        let flags = stats.flag_counts();
        let window = |window: Option<u16>| window.map_or(-1.0, f64::from);
        match self {
            Feature::DurationUs => stats.duration_ns() as f64 / NS_PER_US,
            Feature::FwdPackets => fwd.packets() as f64,
            Feature::BwdPackets => bwd.packets() as f64,
            Feature::FwdBytes => fwd.bytes() as f64,
            Feature::BwdBytes => bwd.bytes() as f64,
            Feature::FwdMeanSize => mean_size(fwd.bytes(), fwd.packets()),
            Feature::BwdMeanSize => mean_size(bwd.bytes(), bwd.packets()),
            Feature::ProtoTcp => f64::from(u8::from(proto == 6)),
            Feature::ProtoUdp => f64::from(u8::from(proto == 17)),
            Feature::ProtoIcmp => f64::from(u8::from(proto == 1 || proto == 58)),
            Feature::FwdLengthMax => fwd.lengths().max() as f64,
            Feature::FwdLengthStd => fwd.lengths().std_dev(),
            Feature::BwdLengthMax => bwd.lengths().max() as f64,
            Feature::BwdLengthStd => bwd.lengths().std_dev(),
            Feature::FlowIatMeanUs => stats.inter_arrival().mean() / NS_PER_US,
            Feature::FlowIatMaxUs => stats.inter_arrival().max() as f64 / NS_PER_US,
            Feature::FlowIatStdUs => stats.inter_arrival().std_dev() / NS_PER_US,
            Feature::FwdIatMeanUs => fwd.inter_arrival().mean() / NS_PER_US,
            Feature::BwdIatMeanUs => bwd.inter_arrival().mean() / NS_PER_US,
            Feature::SynCount => f64::from(flags.syn),
            Feature::FinCount => f64::from(flags.fin),
            Feature::RstCount => f64::from(flags.rst),
            Feature::PshCount => f64::from(flags.psh),
            Feature::AckCount => f64::from(flags.ack),
            Feature::FwdInitWindow => window(fwd.initial_window()),
            Feature::BwdInitWindow => window(bwd.initial_window()),
        }
    }
}

/// What is done to a raw value before standardisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// ln(1 + max(x, 0)): counts, bytes and times span orders of magnitude.
    Log1p,
    Identity,
}

impl Transform {
    pub fn apply(self, raw: f64) -> f64 {
        match self {
            Transform::Log1p => raw.max(0.0).ln_1p(),
            Transform::Identity => raw,
        }
    }
}

/// An ordered block of features: a model's input, before standardisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureBlock {
    name: String,
    features: Vec<(Feature, Transform)>,
}

#[derive(Deserialize)]
struct Definition {
    blocks: Vec<BlockDefinition>,
}

#[derive(Deserialize)]
struct BlockDefinition {
    name: String,
    #[serde(default)]
    extends: Option<String>,
    features: Vec<FeatureDefinition>,
}

#[derive(Deserialize)]
struct FeatureDefinition {
    name: String,
    transform: String,
}

impl FeatureBlock {
    /// The block called `name` in `features.json`, with the blocks it extends first.
    pub fn named(name: &str) -> Result<FeatureBlock, ModelError> {
        let definition: Definition = serde_json::from_str(DEFINITION)
            .map_err(|e| ModelError::Definition(format!("features.json: {e}")))?;
        let mut features = Vec::new();
        let mut next = Some(name.to_owned());
        // Each block is visited at most once, so a cycle of `extends` ends too.
        let mut visited = Vec::new();
        while let Some(block_name) = next.take() {
            if visited.contains(&block_name) {
                return Err(ModelError::Definition(format!(
                    "block {block_name:?} extends itself"
                )));
            }
            let block = definition
                .blocks
                .iter()
                .find(|block| block.name == block_name)
                .ok_or_else(|| ModelError::UnknownBlock(block_name.clone()))?;
            let mut own = block
                .features
                .iter()
                .map(|feature| {
                    let parsed = Feature::named(&feature.name).ok_or_else(|| {
                        ModelError::Definition(format!("unknown feature {:?}", feature.name))
                    })?;
                    let transform = match feature.transform.as_str() {
                        "log1p" => Transform::Log1p,
                        "identity" => Transform::Identity,
                        other => {
                            return Err(ModelError::Definition(format!(
                                "feature {:?}: unknown transform {other:?}",
                                feature.name
                            )));
                        }
                    };
                    Ok((parsed, transform))
                })
                .collect::<Result<Vec<_>, ModelError>>()?;
            own.append(&mut features);
            features = own;
            visited.push(block_name);
            next = block.extends.clone();
        }
        if features.len() > FEATURES_MAX {
            return Err(ModelError::Definition(format!(
                "block {name:?} has {} features, more than {FEATURES_MAX}",
                features.len()
            )));
        }
        Ok(FeatureBlock {
            name: name.to_owned(),
            features,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    pub fn features(&self) -> impl Iterator<Item = Feature> + '_ {
        self.features.iter().map(|(feature, _)| *feature)
    }

    /// The block's raw values of a flow, in block order (`out` holds [`FeatureBlock::len`]).
    pub fn raw_values(&self, stats: &FlowStats, proto: u8, out: &mut [f64]) {
        for ((feature, _), value) in self.features.iter().zip(out) {
            *value = feature.raw_value(stats, proto);
        }
    }

    /// Transforms raw values in place, in block order.
    pub fn transform(&self, values: &mut [f64]) {
        for ((_, transform), value) in self.features.iter().zip(values) {
            *value = transform.apply(*value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_of_the_definition_parses_and_cic_extends_base() {
        let base = FeatureBlock::named("base").expect("base block");
        let cic = FeatureBlock::named("cic").expect("cic block");
        assert_eq!(base.len(), 10);
        assert_eq!(cic.len(), 26);
        assert!(cic.features().take(base.len()).eq(base.features()));
        assert!(matches!(
            FeatureBlock::named("nope"),
            Err(ModelError::UnknownBlock(name)) if name == "nope"
        ));
    }

    #[test]
    fn every_feature_is_in_the_widest_block_once() {
        let cic = FeatureBlock::named("cic").expect("cic block");
        for feature in ALL_FEATURES {
            assert_eq!(
                cic.features().filter(|&f| f == feature).count(),
                1,
                "{feature:?}"
            );
        }
    }
}
