//! A model bundle: `manifest.json` and the two ONNX models it names, as `models/train` writes
//! them. Loading validates all of it and scores the manifest's test vectors, so a bundle that
//! loads computes what the training code computed.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tract_onnx::prelude::{
    Datum, Framework, InferenceFact, InferenceModelExt, IntoRunnable, OutletId, TDim, Tensor,
    TypedRunnableModel, tvec,
};
use tract_onnx::tract_hir::infer::Factoid;

use crate::ModelError;
use crate::features::FeatureBlock;

/// Personas (behavioural clusters) a bundle has at most.
pub const PERSONAS_MAX: usize = 8;
/// Flows scored in one call at most.
pub const BATCH_MAX: usize = 256;
const MANIFEST_BYTES_MAX: u64 = 1 << 20;
const ONNX_BYTES_MAX: u64 = 16 << 20;
const CALIBRATION_POINTS_MAX: usize = 1024;
const TEST_VECTORS_MAX: usize = 64;
/// How far tract's float32 results may be from the training code's float64 ones, relative to
/// the expected value (absolute below 1).
const TEST_VECTOR_TOLERANCE: f64 = 1e-3;

#[derive(Deserialize)]
struct Manifest {
    name: String,
    features: String,
    feature_names: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
    autoencoder: AutoencoderManifest,
    personas: PersonasManifest,
    test_vectors: Vec<TestVector>,
}

#[derive(Deserialize)]
struct AutoencoderManifest {
    file: String,
    input: String,
    output: String,
    /// `[error, anomaly]` points, errors strictly increasing.
    calibration: Vec<[f64; 2]>,
}

#[derive(Deserialize)]
struct PersonasManifest {
    file: String,
    input: String,
    output: String,
    names: Vec<String>,
    hostile_share: Vec<f64>,
    temperature: f64,
}

#[derive(Deserialize)]
struct TestVector {
    raw: Vec<f64>,
    error: f64,
    anomaly: f64,
    distances: Vec<f64>,
    persona_probabilities: Vec<f64>,
    persona_risk: f64,
}

/// Which value of a test vector the bundle did not reproduce.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{what} is {found}, the manifest expects {expected}")]
pub struct TestVectorMismatch {
    pub what: String,
    pub expected: f64,
    pub found: f64,
}

/// What the models say of one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowScore {
    /// The autoencoder's reconstruction error: the mean squared difference between the
    /// standardised vector and its reconstruction.
    pub error: f64,
    /// The error's place among the benign training flows' errors, 0..=1 (0.99: more than 99 % of
    /// them).
    pub anomaly: f64,
    /// Euclidean distance from the standardised vector to each persona's centre.
    pub distances: [f64; PERSONAS_MAX],
    /// The probability of each persona: softmax of `-distance / temperature`.
    pub persona_probabilities: [f64; PERSONAS_MAX],
    /// The personas' hostile shares weighted by their probabilities, 0..=1.
    pub persona_risk: f64,
}

impl FlowScore {
    /// The most probable persona's index.
    pub fn persona(&self, personas: usize) -> usize {
        let probabilities = &self.persona_probabilities[..personas];
        (0..personas)
            .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
            .unwrap_or(0)
    }
}

/// Buffers a scorer reuses from batch to batch.
#[derive(Debug, Default)]
pub struct ScoreBuffers {
    standardised: Vec<f32>,
}

/// The models of one bundle, loaded, validated and optimised.
pub struct ModelBundle {
    name: String,
    block: FeatureBlock,
    mean: Vec<f64>,
    std: Vec<f64>,
    autoencoder: Arc<TypedRunnableModel>,
    calibration: Vec<[f64; 2]>,
    personas: Arc<TypedRunnableModel>,
    persona_names: Vec<String>,
    hostile_share: Vec<f64>,
    temperature: f64,
}

impl std::fmt::Debug for ModelBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBundle")
            .field("name", &self.name)
            .field("block", &self.block.name())
            .field("personas", &self.persona_names)
            .finish_non_exhaustive()
    }
}

/// The files of a bundle a manifest names: the autoencoder's and the personas' ONNX models.
pub fn manifest_files(manifest: &[u8]) -> Result<(String, String), ModelError> {
    let manifest = parse_manifest(manifest)?;
    Ok((manifest.autoencoder.file, manifest.personas.file))
}

fn parse_manifest(manifest: &[u8]) -> Result<Manifest, ModelError> {
    if manifest.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(ModelError::Manifest(format!(
            "{} bytes, more than {MANIFEST_BYTES_MAX}",
            manifest.len()
        )));
    }
    serde_json::from_slice(manifest).map_err(|e| ModelError::Manifest(e.to_string()))
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ModelError> {
    let read_error = |reason: String| ModelError::Read {
        file: path.display().to_string(),
        reason,
    };
    let length = std::fs::metadata(path)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if length > max {
        return Err(read_error(format!("{length} bytes, more than {max}")));
    }
    std::fs::read(path).map_err(|e| read_error(e.to_string()))
}

impl ModelBundle {
    /// Loads the bundle in `dir`: its `manifest.json` and the files it names.
    pub fn load_dir(dir: &Path) -> Result<ModelBundle, ModelError> {
        let manifest = read_bounded(&dir.join("manifest.json"), MANIFEST_BYTES_MAX)?;
        let (autoencoder, personas) = manifest_files(&manifest)?;
        let autoencoder = read_bounded(&dir.join(autoencoder), ONNX_BYTES_MAX)?;
        let personas = read_bounded(&dir.join(personas), ONNX_BYTES_MAX)?;
        ModelBundle::from_bytes(&manifest, &autoencoder, &personas)
    }

    /// Validates a bundle given whole: the manifest against the feature definition, the models'
    /// shapes against the manifest, and every test vector's scores.
    pub fn from_bytes(
        manifest: &[u8],
        autoencoder: &[u8],
        personas: &[u8],
    ) -> Result<ModelBundle, ModelError> {
        let manifest = parse_manifest(manifest)?;
        for (model, bytes) in [("autoencoder", autoencoder), ("personas", personas)] {
            if bytes.len() as u64 > ONNX_BYTES_MAX {
                return Err(ModelError::Onnx {
                    model,
                    reason: format!("{} bytes, more than {ONNX_BYTES_MAX}", bytes.len()),
                });
            }
        }
        let block = FeatureBlock::named(&manifest.features)?;
        let width = block.len();
        let names: Vec<&str> = block.features().map(|f| f.name()).collect();
        if manifest.feature_names != names {
            return Err(ModelError::Manifest(format!(
                "feature_names {:?} are not block {:?}'s {names:?}",
                manifest.feature_names, manifest.features
            )));
        }
        check_vector("mean", &manifest.mean, width, |_| true)?;
        check_vector("std", &manifest.std, width, |std| std > 0.0)?;
        check_calibration(&manifest.autoencoder.calibration)?;
        let persona_count = manifest.personas.names.len();
        if !(1..=PERSONAS_MAX).contains(&persona_count) {
            return Err(ModelError::Manifest(format!(
                "personas.names: {persona_count} personas, not 1..={PERSONAS_MAX}"
            )));
        }
        check_vector(
            "personas.hostile_share",
            &manifest.personas.hostile_share,
            persona_count,
            |share| (0.0..=1.0).contains(&share),
        )?;
        let temperature = manifest.personas.temperature;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ModelError::Manifest(format!(
                "personas.temperature: {temperature} is not a positive number"
            )));
        }
        if manifest.test_vectors.is_empty() || manifest.test_vectors.len() > TEST_VECTORS_MAX {
            return Err(ModelError::Manifest(format!(
                "test_vectors: {} vectors, not 1..={TEST_VECTORS_MAX}",
                manifest.test_vectors.len()
            )));
        }
        let autoencoder = load_graph(
            "autoencoder",
            autoencoder,
            &manifest.autoencoder.input,
            &manifest.autoencoder.output,
            width,
            width,
        )?;
        let personas_model = load_graph(
            "personas",
            personas,
            &manifest.personas.input,
            &manifest.personas.output,
            width,
            persona_count,
        )?;
        let bundle = ModelBundle {
            name: manifest.name,
            block,
            mean: manifest.mean,
            std: manifest.std,
            autoencoder,
            calibration: manifest.autoencoder.calibration,
            personas: personas_model,
            persona_names: manifest.personas.names,
            hostile_share: manifest.personas.hostile_share,
            temperature,
        };
        bundle.check_test_vectors(&manifest.test_vectors)?;
        Ok(bundle)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The features the models take, in order.
    pub fn block(&self) -> &FeatureBlock {
        &self.block
    }

    pub fn persona_names(&self) -> &[String] {
        &self.persona_names
    }

    /// Scores `rows` flows whose raw feature values (block order, [`ModelBundle::block`]) follow
    /// each other in `raw`, at most [`BATCH_MAX`]; `out` receives one score per flow.
    pub fn score(
        &self,
        raw: &[f64],
        buffers: &mut ScoreBuffers,
        out: &mut Vec<FlowScore>,
    ) -> Result<(), ModelError> {
        let width = self.block.len();
        let rows = raw.len() / width;
        if rows == 0 || rows > BATCH_MAX || raw.len() != rows * width {
            return Err(ModelError::Run {
                model: "bundle",
                reason: format!(
                    "{} values are not 1..={BATCH_MAX} rows of {width}",
                    raw.len()
                ),
            });
        }
        let standardised = &mut buffers.standardised;
        standardised.clear();
        for row in raw.chunks_exact(width) {
            let mut values = [0.0; crate::features::FEATURES_MAX];
            values[..width].copy_from_slice(row);
            self.block.transform(&mut values[..width]);
            for ((value, mean), std) in values[..width].iter().zip(&self.mean).zip(&self.std) {
                standardised.push(((value - mean) / std) as f32);
            }
        }
        let reconstruction = run("autoencoder", &self.autoencoder, standardised, rows, width)?;
        let distances = run(
            "personas",
            &self.personas,
            standardised,
            rows,
            self.persona_names.len(),
        )?;
        out.clear();
        let personas = self.persona_names.len();
        for ((input, output), distances) in standardised
            .chunks_exact(width)
            .zip(reconstruction.chunks_exact(width))
            .zip(distances.chunks_exact(personas))
        {
            let error = input
                .iter()
                .zip(output)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum::<f64>()
                / width as f64;
            let mut score = FlowScore {
                error,
                anomaly: interpolate(&self.calibration, error),
                ..FlowScore::default()
            };
            for (slot, &distance) in score.distances.iter_mut().zip(distances) {
                *slot = f64::from(distance);
            }
            self.persona_probabilities(&mut score);
            out.push(score);
        }
        Ok(())
    }

    fn persona_probabilities(&self, score: &mut FlowScore) {
        let personas = self.persona_names.len();
        softmax_of_closeness(
            &score.distances[..personas],
            self.temperature,
            &mut score.persona_probabilities[..personas],
        );
        score.persona_risk = score.persona_probabilities[..personas]
            .iter()
            .zip(&self.hostile_share)
            .map(|(p, share)| p * share)
            .sum();
    }

    fn check_test_vectors(&self, vectors: &[TestVector]) -> Result<(), ModelError> {
        let mut buffers = ScoreBuffers::default();
        let mut scores = Vec::with_capacity(1);
        for (index, vector) in vectors.iter().enumerate() {
            let fail = |mismatch| ModelError::TestVector { index, mismatch };
            if vector.raw.len() != self.block.len()
                || vector.distances.len() != self.persona_names.len()
                || vector.persona_probabilities.len() != self.persona_names.len()
            {
                return Err(ModelError::Manifest(format!(
                    "test vector {index}: raw, distances or persona_probabilities has the wrong length"
                )));
            }
            self.score(&vector.raw, &mut buffers, &mut scores)?;
            let score = scores[0];
            let mut expected = vec![
                ("error".to_owned(), vector.error, score.error),
                ("anomaly".to_owned(), vector.anomaly, score.anomaly),
                (
                    "persona_risk".to_owned(),
                    vector.persona_risk,
                    score.persona_risk,
                ),
            ];
            for (k, (distance, probability)) in vector
                .distances
                .iter()
                .zip(&vector.persona_probabilities)
                .enumerate()
            {
                expected.push((format!("distance {k}"), *distance, score.distances[k]));
                expected.push((
                    format!("persona probability {k}"),
                    *probability,
                    score.persona_probabilities[k],
                ));
            }
            for (what, expected, found) in expected {
                // Written so that a NaN fails too.
                let close =
                    (found - expected).abs() <= TEST_VECTOR_TOLERANCE * expected.abs().max(1.0);
                if !close {
                    return Err(fail(TestVectorMismatch {
                        what,
                        expected,
                        found,
                    }));
                }
            }
        }
        Ok(())
    }
}

/// `out[k]` = softmax over k of `-distances[k] / temperature`: the nearer centre, the likelier.
fn softmax_of_closeness(distances: &[f64], temperature: f64, out: &mut [f64]) {
    // Shifting by the nearest distance keeps every exponent at most 0 (no overflow).
    let nearest = distances.iter().copied().fold(f64::INFINITY, f64::min);
    for (slot, distance) in out.iter_mut().zip(distances) {
        *slot = (-(distance - nearest) / temperature).exp();
    }
    let total: f64 = out.iter().sum();
    for slot in out.iter_mut() {
        *slot /= total;
    }
}

/// Piecewise-linear interpolation through `points`, clamped at both ends (numpy's `interp`).
fn interpolate(points: &[[f64; 2]], x: f64) -> f64 {
    let after = points.partition_point(|point| point[0] <= x);
    match (after.checked_sub(1).map(|i| points[i]), points.get(after)) {
        (Some([x0, y0]), Some([x1, y1])) => y0 + (y1 - y0) * (x - x0) / (x1 - x0),
        (Some([_, y]), None) | (None, Some(&[_, y])) => y,
        (None, None) => 0.0,
    }
}

fn check_vector(
    field: &str,
    values: &[f64],
    length: usize,
    valid: impl Fn(f64) -> bool,
) -> Result<(), ModelError> {
    if values.len() != length {
        return Err(ModelError::Manifest(format!(
            "{field}: {} values, the bundle needs {length}",
            values.len()
        )));
    }
    match values.iter().position(|&v| !(v.is_finite() && valid(v))) {
        Some(index) => Err(ModelError::Manifest(format!(
            "{field}[{index}]: {} is out of range",
            values[index]
        ))),
        None => Ok(()),
    }
}

fn check_calibration(points: &[[f64; 2]]) -> Result<(), ModelError> {
    if !(2..=CALIBRATION_POINTS_MAX).contains(&points.len()) {
        return Err(ModelError::Manifest(format!(
            "autoencoder.calibration: {} points, not 2..={CALIBRATION_POINTS_MAX}",
            points.len()
        )));
    }
    let finite = points.iter().flatten().all(|v| v.is_finite());
    let increasing = points
        .windows(2)
        .all(|pair| pair[0][0] < pair[1][0] && pair[0][1] <= pair[1][1]);
    let in_range = points
        .iter()
        .all(|[_, anomaly]| (0.0..=1.0).contains(anomaly));
    if !(finite && increasing && in_range) {
        return Err(ModelError::Manifest(
            "autoencoder.calibration: errors must increase strictly and anomalies never \
             decrease, within 0..=1"
                .into(),
        ));
    }
    Ok(())
}

/// Loads an ONNX model that takes `[rows, inputs]` float32 values on its input `input` and gives
/// `[rows, outputs]` on its output `output`, optimised for any number of rows.
fn load_graph(
    model: &'static str,
    bytes: &[u8],
    input: &str,
    output: &str,
    inputs: usize,
    outputs: usize,
) -> Result<Arc<TypedRunnableModel>, ModelError> {
    let onnx_error = |reason: String| ModelError::Onnx { model, reason };
    let mut graph = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| onnx_error(format!("{e:#}")))?;
    let input_outlet = graph
        .find_outlet_label(input)
        .or_else(|| {
            graph
                .node_by_name(input)
                .ok()
                .map(|node| OutletId::new(node.id, 0))
        })
        .ok_or_else(|| onnx_error(format!("no input is called {input:?}")))?;
    if graph
        .input_outlets()
        .map_err(|e| onnx_error(e.to_string()))?
        != [input_outlet]
    {
        return Err(onnx_error(format!(
            "the model must have one input, {input:?}"
        )));
    }
    let output_outlet = graph
        .find_outlet_label(output)
        .or_else(|| {
            graph
                .node_by_name(output)
                .ok()
                .map(|node| OutletId::new(node.id, 0))
        })
        .ok_or_else(|| onnx_error(format!("no output is called {output:?}")))?;
    graph
        .select_output_outlets(&[output_outlet])
        .map_err(|e| onnx_error(e.to_string()))?;
    // The model's own declaration first: a width it states must be the block's.
    let declared = graph
        .input_fact(0)
        .map_err(|e| onnx_error(e.to_string()))?
        .shape
        .clone();
    let declared_type = graph
        .input_fact(0)
        .map_err(|e| onnx_error(e.to_string()))?
        .datum_type
        .concretize();
    let declared_width = declared.dims().nth(1).and_then(|dim| dim.concretize());
    let width_fits = declared_width
        .as_ref()
        .is_none_or(|width| width.as_i64() == i64::try_from(inputs).ok());
    let type_fits = declared_type.is_none_or(|datum| datum == f32::datum_type());
    if declared.rank().concretize().is_some_and(|rank| rank != 2) || !width_fits || !type_fits {
        return Err(ModelError::Shape {
            model,
            what: "its input",
            found: format!("{declared:?} of {declared_type:?}"),
            expected: format!("[rows, {inputs}] of f32"),
        });
    }
    // Then the fact tract needs: float32, any number of rows.
    let rows = graph.sym("rows");
    graph
        .set_input_fact(
            0,
            InferenceFact::dt_shape(
                f32::datum_type(),
                tvec![TDim::from(rows), TDim::from(inputs)],
            ),
        )
        .map_err(|e| onnx_error(e.to_string()))?;
    let typed = graph
        .into_typed()
        .map_err(|e| onnx_error(format!("{e:#}")))?;
    check_shape(model, "its output", &typed.output_fact(0), outputs)?;
    typed
        .into_optimized()
        .and_then(|optimised| optimised.into_runnable())
        .map_err(|e| onnx_error(format!("{e:#}")))
}

fn check_shape(
    model: &'static str,
    what: &'static str,
    fact: &tract_onnx::prelude::TractResult<&tract_onnx::prelude::TypedFact>,
    columns: usize,
) -> Result<(), ModelError> {
    let expected = format!("[rows, {columns}] of f32");
    let found = match fact {
        Ok(fact) => format!("{fact:?}"),
        Err(e) => e.to_string(),
    };
    let fits = fact.as_ref().is_ok_and(|fact| {
        let dims = fact.shape.dims();
        fact.datum_type == f32::datum_type()
            && dims.len() == 2
            && dims[1].as_i64() == i64::try_from(columns).ok()
    });
    if fits {
        Ok(())
    } else {
        Err(ModelError::Shape {
            model,
            what,
            found,
            expected,
        })
    }
}

/// Runs a loaded model on `rows` rows of `input` and returns its `[rows, columns]` output.
fn run(
    model: &'static str,
    plan: &Arc<TypedRunnableModel>,
    input: &[f32],
    rows: usize,
    columns: usize,
) -> Result<Vec<f32>, ModelError> {
    let run_error = |reason: String| ModelError::Run { model, reason };
    let width = input.len() / rows;
    let tensor = Tensor::from_shape(&[rows, width], input).map_err(|e| run_error(e.to_string()))?;
    let outputs = plan
        .run(tvec!(tensor.into()))
        .map_err(|e| run_error(format!("{e:#}")))?;
    let output = outputs
        .first()
        .ok_or_else(|| run_error("no output".into()))?
        .to_plain_array_view::<f32>()
        .map_err(|e| run_error(e.to_string()))?;
    if output.shape() != [rows, columns] {
        return Err(run_error(format!(
            "output shape {:?}, expected [{rows}, {columns}]",
            output.shape()
        )));
    }
    if output.iter().any(|value| !value.is_finite()) {
        return Err(run_error(
            "the output holds a value that is not a number".into(),
        ));
    }
    Ok(output.iter().copied().collect())
}
