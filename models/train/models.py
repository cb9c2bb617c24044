"""The two models, their calibration and persona names, and the scores they give a flow.

Scores are computed here in float64 with scikit-learn itself: they are the reference that the
exported ONNX graphs (float32, run by tract in the VFN) are checked against.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neural_network import MLPRegressor

from features import Block

# Benign-error quantiles the calibration table holds: every percent up to 90 %, then finer where
# the thresholds that matter (0.95, 0.99) lie; the largest benign error maps to 1.
CALIBRATION_LEVELS = np.round(
    np.concatenate(
        [np.arange(0, 91) / 100, np.arange(181, 199) / 200, np.arange(991, 1000) / 1000]
    ),
    3,
)
# Successive calibration errors at least this far apart (relative): closer ones are ties that the
# VFN's float32 models cannot tell apart, and a steep step between them would turn float32
# rounding of the error into a visible change of the anomaly.
CALIBRATION_GAP_MIN = 1e-2

KMEANS_INITIALISATIONS = 10
AUTOENCODER_EPOCHS_MAX = 300


def standardisation(transformed):
    """Mean and standard deviation per feature; a constant feature gets std 1 (features.json)."""
    mean = transformed.mean(axis=0)
    std = transformed.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


def fit_autoencoder(z_benign, hidden_layer_sizes, seed):
    autoencoder = MLPRegressor(
        hidden_layer_sizes=hidden_layer_sizes,
        activation="relu",
        max_iter=AUTOENCODER_EPOCHS_MAX,
        random_state=seed,
    )
    return autoencoder.fit(z_benign, z_benign)


def reconstruction_error(autoencoder, z):
    return np.mean((z - autoencoder.predict(z)) ** 2, axis=1)


def calibration_table(benign_errors):
    """[error, anomaly] points: each error's quantile level among the benign training errors."""
    errors = np.quantile(benign_errors, CALIBRATION_LEVELS)
    points = []
    for error, level in zip(errors, CALIBRATION_LEVELS):
        # Ties keep their lowest level: a common benign vector is as ordinary as it gets.
        if not points or error > points[-1][0] * (1 + CALIBRATION_GAP_MIN):
            points.append([float(error), float(level)])
    largest = float(benign_errors.max())
    if len(points) > 1 and largest <= points[-1][0] * (1 + CALIBRATION_GAP_MIN):
        points.pop()
    points.append([largest, 1.0])
    return points


def fit_personas(z, clusters, seed):
    return KMeans(n_clusters=clusters, n_init=KMEANS_INITIALISATIONS, random_state=seed).fit(z)


def hostile_shares(kmeans, labels):
    """Per cluster, the share of malicious training rows among those assigned to it."""
    assigned = kmeans.labels_
    return [
        float(labels[assigned == k].mean()) if np.any(assigned == k) else 0.0
        for k in range(kmeans.n_clusters)
    ]


def closeness_softmax(distances, temperature):
    """Softmax over clusters of -distance / temperature, shifted by the nearest (no overflow)."""
    weights = np.exp(-(distances - distances.min(axis=1, keepdims=True)) / temperature)
    return weights / weights.sum(axis=1, keepdims=True)


def persona_name(centroid):
    """A persona's name from its centroid in raw units (a dict by feature name); first rule wins.

    The packet and byte counts of a centroid are geometric means (they average log1p values), and
    the protocol one-hots are the cluster's share of each protocol.
    """
    fwd_packets, bwd_packets = centroid["fwd_packets"], centroid["bwd_packets"]
    fwd_bytes, bwd_bytes = centroid["fwd_bytes"], centroid["bwd_bytes"]
    duration_s = centroid["duration_us"] / 1e6
    if centroid["proto_icmp"] >= 0.5:
        return "pinger"
    if centroid["proto_udp"] >= 0.5 and fwd_packets <= 3 and bwd_packets <= 3:
        return "dns-like"
    if fwd_packets <= 3 and bwd_packets <= 1:
        return "scanner"
    if fwd_packets + bwd_packets <= 10 and duration_s >= 10:
        return "keepalive"
    if fwd_bytes >= 10_000 and fwd_bytes >= 4 * bwd_bytes:
        return "data exporter"
    if bwd_bytes >= 10_000 and bwd_bytes >= 4 * fwd_bytes:
        return "bulk download"
    if duration_s <= 10 and fwd_packets <= 50 and bwd_packets <= 50:
        return "API consumer"
    return "long session"


def unique_names(names):
    """The names, a repeated one suffixed with its rank (scanner, scanner 2, ...)."""
    seen = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return unique


@dataclass
class Models:
    """Everything a manifest describes, with the fitted scikit-learn estimators."""

    block: Block
    mean: np.ndarray
    std: np.ndarray
    autoencoder: MLPRegressor
    calibration: list
    kmeans: KMeans
    persona_names: list
    hostile_share: list
    temperature: float

    def standardise(self, raw):
        return (self.block.transform(raw) - self.mean) / self.std

    def centroids_raw(self):
        return self.block.untransform(self.kmeans.cluster_centers_ * self.std + self.mean)

    def score(self, raw):
        """Per row: error, anomaly, distances, persona probabilities, persona risk, combined."""
        z = self.standardise(raw)
        error = reconstruction_error(self.autoencoder, z)
        calibration = np.array(self.calibration)
        anomaly = np.interp(error, calibration[:, 0], calibration[:, 1])
        distances = self.kmeans.transform(z)
        probabilities = closeness_softmax(distances, self.temperature)
        persona_risk = probabilities @ np.array(self.hostile_share)
        return {
            "error": error,
            "anomaly": anomaly,
            "distances": distances,
            "persona_probabilities": probabilities,
            "persona": probabilities.argmax(axis=1),
            "persona_risk": persona_risk,
            "combined": (anomaly + persona_risk) / 2,
        }


def fit_models(block, raw, labels, hidden_layer_sizes, clusters, seed, namer=None):
    """Both models fitted on one training split: the autoencoder on its benign rows only.
    `namer` names a persona from its centroid (default: persona_name's rules)."""
    namer = namer or persona_name
    mean, std = standardisation(block.transform(raw))
    z = (block.transform(raw) - mean) / std
    benign = labels == 0
    autoencoder = fit_autoencoder(z[benign], hidden_layer_sizes, seed)
    kmeans = fit_personas(z, clusters, seed)
    centroids = block.untransform(kmeans.cluster_centers_ * std + mean)
    names = unique_names(
        [namer(dict(zip(block.feature_names, centroid))) for centroid in centroids]
    )
    return Models(
        block=block,
        mean=mean,
        std=std,
        autoencoder=autoencoder,
        calibration=calibration_table(reconstruction_error(autoencoder, z[benign])),
        kmeans=kmeans,
        persona_names=names,
        hostile_share=hostile_shares(kmeans, labels),
        temperature=float(np.median(kmeans.transform(z).min(axis=1))),
    )
