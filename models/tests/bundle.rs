//! The committed model bundle, loaded with tract: its test vectors (scored by scikit-learn at
//! training time) come out the same, and bundles that are wrong anywhere are refused whole.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vfn_models::{FeatureBlock, ModelBundle, ModelError, ScoreBuffers};

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("trained/datasets-base")
}

fn part(name: &str) -> Vec<u8> {
    std::fs::read(bundle_dir().join(name)).expect("bundle file")
}

fn manifest() -> Value {
    serde_json::from_slice(&part("manifest.json")).expect("manifest")
}

fn load_with(manifest: &Value) -> Result<ModelBundle, ModelError> {
    let bytes = serde_json::to_vec(manifest).expect("encode");
    ModelBundle::from_bytes(&bytes, &part("autoencoder.onnx"), &part("personas.onnx"))
}

#[test]
fn the_committed_bundle_scores_its_test_vectors_as_scikit_learn_did() {
    let bundle = ModelBundle::load_dir(&bundle_dir()).expect("the committed bundle loads");
    assert_eq!(bundle.block(), &FeatureBlock::named("base").expect("base"));
    let manifest = manifest();
    let vectors = manifest["test_vectors"].as_array().expect("test vectors");
    assert!(vectors.len() >= 8, "{} test vectors", vectors.len());
    // Loading compared every value already; here the whole batch at once, against the
    // manifest, so that batching changes nothing either.
    let raw: Vec<f64> = vectors
        .iter()
        .flat_map(|v| {
            v["raw"]
                .as_array()
                .expect("raw")
                .iter()
                .map(|x| x.as_f64().expect("number"))
        })
        .collect();
    let mut scores = Vec::new();
    bundle
        .score(&raw, &mut ScoreBuffers::default(), &mut scores)
        .expect("scores");
    assert_eq!(scores.len(), vectors.len());
    for (score, vector) in scores.iter().zip(vectors) {
        let expected = vector["anomaly"].as_f64().expect("anomaly");
        assert!(
            (score.anomaly - expected).abs() < 1e-3,
            "{} vs {expected}",
            score.anomaly
        );
        let error = vector["error"].as_f64().expect("error");
        assert!((score.error - error).abs() <= 1e-3 * error.max(1.0));
        let risk = vector["persona_risk"].as_f64().expect("risk");
        assert!((score.persona_risk - risk).abs() < 1e-3);
    }
    assert!(
        vectors.iter().any(|v| v["label"] == 1) && vectors.iter().any(|v| v["label"] == 0),
        "the vectors cover hostile and benign flows"
    );
}

#[test]
fn a_bundle_that_does_not_reproduce_a_test_vector_is_refused() {
    let mut manifest = manifest();
    let anomaly = manifest["test_vectors"][2]["anomaly"]
        .as_f64()
        .expect("anomaly");
    manifest["test_vectors"][2]["anomaly"] = Value::from(if anomaly > 0.5 { 0.1 } else { 0.9 });
    match load_with(&manifest) {
        Err(ModelError::TestVector { index: 2, mismatch }) => {
            assert_eq!(mismatch.what, "anomaly")
        }
        other => panic!("expected a test vector mismatch, got {other:?}"),
    }
}

#[test]
fn models_whose_input_is_not_the_blocks_width_are_refused_naming_the_shape() {
    // The manifest claims the wider cic block; the models take the base block's 10 values.
    let cic = FeatureBlock::named("cic").expect("cic");
    let mut manifest = manifest();
    manifest["features"] = Value::from("cic");
    manifest["feature_names"] = cic.features().map(|f| f.name()).collect();
    manifest["mean"] = vec![0.0; cic.len()].into();
    manifest["std"] = vec![1.0; cic.len()].into();
    let error = load_with(&manifest).expect_err("wrong width");
    assert!(
        matches!(
            error,
            ModelError::Shape {
                model: "autoencoder",
                what: "its input",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("the bundle needs [rows, 26] of f32"),
        "{error}"
    );
}

/// A change made to a good manifest.
type ManifestChange = dyn Fn(&mut Value);

#[test]
fn a_manifest_wrong_in_any_field_is_refused_naming_it() {
    let cases: [(&str, Box<ManifestChange>); 5] = [
        (
            "feature_names",
            Box::new(|m| m["feature_names"][0] = "fwd_packets".into()),
        ),
        ("std[3]", Box::new(|m| m["std"][3] = 0.0.into())),
        (
            "personas.hostile_share",
            Box::new(|m| m["personas"]["hostile_share"] = vec![0.5].into()),
        ),
        (
            "autoencoder.calibration",
            Box::new(|m| {
                let points = m["autoencoder"]["calibration"]
                    .as_array_mut()
                    .expect("points");
                points.reverse();
            }),
        ),
        (
            "no feature block is called \"zeek\"",
            Box::new(|m| m["features"] = "zeek".into()),
        ),
    ];
    for (expected, change) in cases {
        let mut manifest = manifest();
        change(&mut manifest);
        let error = load_with(&manifest).expect_err(expected).to_string();
        assert!(error.contains(expected), "{expected:?} not in {error}");
    }
    let error =
        ModelBundle::from_bytes(&part("manifest.json"), b"not onnx", &part("personas.onnx"))
            .expect_err("garbage");
    assert!(
        matches!(
            error,
            ModelError::Onnx {
                model: "autoencoder",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn every_committed_bundle_loads_and_reproduces_its_test_vectors() {
    let trained = Path::new(env!("CARGO_MANIFEST_DIR")).join("trained");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&trained).expect("models/trained") {
        let dir = entry.expect("entry").path();
        let bundle =
            ModelBundle::load_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        names.push(bundle.name().to_owned());
    }
    names.sort();
    assert_eq!(names, ["datasets-base", "lab-cic"]);
}
