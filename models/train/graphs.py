"""The ONNX graphs the VFN runs with tract-onnx 0.23, and their checks.

Both graphs take the standardised vector (float32 [rows, D], input "input"): standardisation
happens outside them, in the VFN, with the manifest's mean and std.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from models import closeness_softmax

INPUT = "input"
RECONSTRUCTION = "reconstruction"
DISTANCES = "distances"
# ONNX opset 15: within what tract-onnx 0.23 supports well, and ReduceSumSquare still takes its
# axes as an attribute (opset 18 made them an input).
OPSET = 15
# The IR version that came with opset 15 (ONNX 1.10), not the newest the onnx package writes.
IR_VERSION = 8
# The operators these graphs hold, each one registered by tract-onnx 0.23 (its ops/ registry).
# Anything else fails the export rather than the VFN's load.
TRACT_OPERATORS = {"Add", "MatMul", "ReduceSumSquare", "Relu", "Sqrt", "Sub", "Unsqueeze"}
# The VFN's own check of the test vectors (models/src/bundle.rs): relative, absolute below 1.
VFN_TOLERANCE = 1e-3


def model_of(name, nodes, initializers, width, outputs, output_name):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, outputs])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="models/train",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def autoencoder_graph(autoencoder):
    """The MLPRegressor's forward pass: MatMul and Add per layer, Relu between them.

    Built here rather than by skl2onnx: skl2onnx 1.20's MLPRegressor converter reshapes the
    output to [rows * outputs, 1], which is wrong for a regressor with several outputs.
    """
    if autoencoder.activation != "relu" or autoencoder.out_activation_ != "identity":
        activations = f"{autoencoder.activation}/{autoencoder.out_activation_}"
        raise SystemExit(f"autoencoder: activations {activations} not exported")
    nodes, initializers = [], []
    layer_input = INPUT
    layers = len(autoencoder.coefs_)
    for layer, (weights, bias) in enumerate(zip(autoencoder.coefs_, autoencoder.intercepts_)):
        last = layer == layers - 1
        initializers += [
            numpy_helper.from_array(weights.astype(np.float32), f"weights_{layer}"),
            numpy_helper.from_array(bias.astype(np.float32), f"bias_{layer}"),
        ]
        nodes += [
            helper.make_node("MatMul", [layer_input, f"weights_{layer}"], [f"product_{layer}"]),
            helper.make_node(
                "Add",
                [f"product_{layer}", f"bias_{layer}"],
                [RECONSTRUCTION if last else f"sum_{layer}"],
            ),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"sum_{layer}"], [f"activation_{layer}"]))
            layer_input = f"activation_{layer}"
    width = autoencoder.coefs_[0].shape[0]
    return model_of("autoencoder", nodes, initializers, width, width, RECONSTRUCTION)


def personas_graph(centroids):
    """distances[n, k] = sqrt(sum_d (x[n, d] - centroid[k, d])^2), as KMeans.transform gives.

    skl2onnx's KMeans graph expands the square (|x|^2 - 2 x.c + |c|^2), which in float32 loses
    the distance of a vector near its centroid to cancellation and can take the root of a
    negative number; subtracting first keeps every distance accurate.
    """
    clusters, width = centroids.shape
    nodes = [
        helper.make_node("Unsqueeze", [INPUT, "middle_axis"], ["input_by_cluster"]),
        helper.make_node("Sub", ["input_by_cluster", "centroids"], ["differences"]),
        helper.make_node(
            "ReduceSumSquare", ["differences"], ["squared_distances"], axes=[2], keepdims=0
        ),
        helper.make_node("Sqrt", ["squared_distances"], [DISTANCES]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "middle_axis"),
        numpy_helper.from_array(centroids.astype(np.float32), "centroids"),
    ]
    return model_of("personas", nodes, initializers, width, clusters, DISTANCES)


def operators(model):
    return sorted({node.op_type for node in model.graph.node})


def check_standard_operators(name, model):
    """Only default-domain operators that tract runs: no ai.onnx.ml (Scaler, ZipMap, ...)."""
    foreign = sorted(
        {
            f"{node.domain}.{node.op_type}"
            for node in model.graph.node
            if node.domain not in ("", "ai.onnx")
        }
    )
    unknown = sorted(set(operators(model)) - TRACT_OPERATORS)
    imports = sorted(
        entry.domain for entry in model.opset_import if entry.domain not in ("", "ai.onnx")
    )
    if foreign or unknown or imports:
        raise SystemExit(
            f"{name}: non-standard operators {foreign + unknown}, opset imports {imports}"
        )


def float32_scores(models, autoencoder_model, personas_model, raw):
    """What the VFN computes: the graphs in float32 (ONNX reference runtime), the rest float64."""
    z32 = models.standardise(raw).astype(np.float32)
    (reconstruction,) = ReferenceEvaluator(autoencoder_model).run(None, {INPUT: z32})
    (distances,) = ReferenceEvaluator(personas_model).run(None, {INPUT: z32})
    error = np.mean((z32.astype(np.float64) - reconstruction.astype(np.float64)) ** 2, axis=1)
    calibration = np.array(models.calibration)
    distances = distances.astype(np.float64)
    probabilities = closeness_softmax(distances, models.temperature)
    return {
        "error": error,
        "anomaly": np.interp(error, calibration[:, 0], calibration[:, 1]),
        "distances": distances,
        "persona_probabilities": probabilities,
        "persona_risk": probabilities @ np.array(models.hostile_share),
    }


def float32_deviation(models, autoencoder_model, personas_model, raw, expected):
    """Per score, the float32 graphs' largest deviation from `expected` (scikit-learn's scores of
    `raw`) in the VFN's measure: |found - expected| / max(|expected|, 1)."""
    found = float32_scores(models, autoencoder_model, personas_model, raw)
    return {
        key: float(
            np.max(np.abs(found[key] - expected[key]) / np.maximum(np.abs(expected[key]), 1.0))
        )
        for key in found
    }
