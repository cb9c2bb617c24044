"""Trains the VFN's anomaly model bundles and exports them for tract.

Two bundles, each into its own folder under --out (default models/trained):
- datasets-base: the base block, on the shared flow datasets (../shared/datasets/flows);
- lab-cic: the cic block, on flows recorded through the VFN in the lab (models/data/lab-flows.csv,
  made by vfn-record-lab; lab.py).
Each folder gets autoencoder.onnx, personas.onnx, manifest.json and report.md. With --check it
trains into a temporary directory instead and fails if the test vectors' scores differ from
those of the manifests under --out: the proof that the fixed seeds make training reproducible.
--only NAME trains (or checks) one bundle. Run it through run.sh, which sets up the pinned
environment.
"""

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import onnx
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import graphs
import lab
import models as fitting
from features import REPOSITORY, load_block, load_sources
from report import capture_section, write_report

SHARED_DATASETS = REPOSITORY.parent / "shared" / "datasets"
TRAINED = REPOSITORY / "models" / "trained"
MODEL_NAME = "datasets-base"
BLOCK = "base"
SEED = 20240611
HELD_OUT_SHARE = 0.3
VALIDATION_SHARE = 0.2
AUTOENCODER_CANDIDATES = [(6, 3, 6), (8, 3, 8), (8, 4, 8), (16, 4, 16)]
PERSONA_CANDIDATES = [4, 5, 6]
TEST_VECTOR_COUNT = 12
# --check: how far a retrained test vector's score may be from the committed one.
REPRODUCIBLE_RELATIVE = 1e-6
REPRODUCIBLE_ABSOLUTE = 1e-12
PACKAGES = ["numpy", "scipy", "scikit-learn", "onnx"]


def stratified_split(labels, share, seed):
    """Indices of two stratified parts; the second holds `share` of the rows."""
    return train_test_split(
        np.arange(len(labels)), test_size=share, stratify=labels, random_state=seed
    )


class Splits:
    """Per source, its training rows (split again for model selection) and held-out rows."""

    def __init__(self, sources, seed):
        self.sources = sources
        self.train, self.held_out, self.fit, self.validation = [], [], [], []
        for source in sources:
            train, held_out = stratified_split(source.label, HELD_OUT_SHARE, seed)
            fit, validation = stratified_split(source.label[train], VALIDATION_SHARE, seed)
            self.train.append(train)
            self.held_out.append(held_out)
            self.fit.append(train[fit])
            self.validation.append(train[validation])

    def rows(self, part):
        parts = getattr(self, part)
        raw = np.vstack([source.raw[index] for source, index in zip(self.sources, parts)])
        labels = np.concatenate([source.label[index] for source, index in zip(self.sources, parts)])
        return raw, labels


def select_models(block, splits, seed, autoencoder_candidates=None, persona_candidates=None):
    """The autoencoder shape and persona count with the best validation ROC AUC."""
    autoencoder_candidates = autoencoder_candidates or AUTOENCODER_CANDIDATES
    persona_candidates = persona_candidates or PERSONA_CANDIDATES
    raw_fit, labels_fit = splits.rows("fit")
    raw_validation, labels_validation = splits.rows("validation")
    mean, std = fitting.standardisation(block.transform(raw_fit))
    z_fit = (block.transform(raw_fit) - mean) / std
    z_validation = (block.transform(raw_validation) - mean) / std
    autoencoder_auc = {}
    for hidden in autoencoder_candidates:
        autoencoder = fitting.fit_autoencoder(z_fit[labels_fit == 0], hidden, seed)
        error = fitting.reconstruction_error(autoencoder, z_validation)
        autoencoder_auc[hidden] = roc_auc_score(labels_validation, error)
    persona_auc = {}
    for clusters in persona_candidates:
        kmeans = fitting.fit_personas(z_fit, clusters, seed)
        temperature = np.median(kmeans.transform(z_fit).min(axis=1))
        probabilities = fitting.closeness_softmax(kmeans.transform(z_validation), temperature)
        risk = probabilities @ np.array(fitting.hostile_shares(kmeans, labels_fit))
        persona_auc[clusters] = roc_auc_score(labels_validation, risk)
    # max keeps the first of equal scores: the candidates are listed smallest first.
    hidden = max(autoencoder_candidates, key=lambda candidate: autoencoder_auc[candidate])
    clusters = max(persona_candidates, key=lambda candidate: persona_auc[candidate])
    rows = []
    for candidate, auc in autoencoder_auc.items():
        rows.append(
            [f"autoencoder {candidate}", f"{auc:.4f}", "yes" if candidate == hidden else ""]
        )
    for candidate, auc in persona_auc.items():
        rows.append(
            [f"personas K={candidate}", f"{auc:.4f}", "yes" if candidate == clusters else ""]
        )
    return hidden, clusters, rows


def pick_test_vectors(splits, scores_by_source, rng, count=TEST_VECTOR_COUNT):
    """`count` held-out rows: one per (source, label) group, the largest groups more.

    A group's first row is its most common vector (a port scan's probe, say); further rows are
    drawn among those whose persona no test vector has yet, so that every persona is exercised.
    """
    groups = []
    for source_index, source in enumerate(splits.sources):
        held_out = splits.held_out[source_index]
        for label in (0, 1):
            members = np.flatnonzero(source.label[held_out] == label)
            if len(members):
                groups.append((source_index, label, members))
    if len(groups) > count:
        raise SystemExit(f"{len(groups)} (source, label) groups, more than {count} test vectors")
    slots = [1] * len(groups)
    by_size = sorted(range(len(groups)), key=lambda g: -len(groups[g][2]))
    for extra in range(count - len(groups)):
        slots[by_size[extra % len(by_size)]] += 1
    covered = set()
    picks = []
    for (source_index, label, members), slot in zip(groups, slots):
        source = splits.sources[source_index]
        held_out = splits.held_out[source_index]
        personas = scores_by_source[source_index]["persona"]
        raw = source.raw[held_out]
        _, first, counts = np.unique(raw[members], axis=0, return_index=True, return_counts=True)
        chosen = [members[first[np.argmax(counts)]]]
        while len(chosen) < slot:
            taken = covered | {personas[member] for member in chosen}
            remaining = np.setdiff1d(members, chosen)
            fresh = [member for member in remaining if personas[member] not in taken]
            chosen.append(rng.choice(fresh or list(remaining)))
        for member in chosen:
            covered.add(personas[member])
            picks.append((source.name, label, raw[member]))
    return picks


def test_vector(models, source_name, label, raw):
    score = models.score(raw[np.newaxis, :])
    return {
        "source": source_name,
        "label": int(label),
        "raw": [float(value) for value in raw],
        "error": float(score["error"][0]),
        "anomaly": float(score["anomaly"][0]),
        "distances": [float(value) for value in score["distances"][0]],
        "persona_probabilities": [float(value) for value in score["persona_probabilities"][0]],
        "persona_risk": float(score["persona_risk"][0]),
    }


def differences(committed, retrained):
    """Where two manifests' test vectors differ beyond the reproducibility tolerance."""
    found = []
    old_vectors, new_vectors = committed["test_vectors"], retrained["test_vectors"]
    if len(old_vectors) != len(new_vectors):
        return [f"{len(new_vectors)} test vectors, the committed manifest has {len(old_vectors)}"]
    if committed["personas"]["names"] != retrained["personas"]["names"]:
        found.append(
            f"persona names {retrained['personas']['names']} != {committed['personas']['names']}"
        )
    for index, (old, new) in enumerate(zip(old_vectors, new_vectors)):
        for key in (
            "raw",
            "error",
            "anomaly",
            "distances",
            "persona_probabilities",
            "persona_risk",
        ):
            old_values, new_values = np.atleast_1d(old[key]), np.atleast_1d(new[key])
            tolerance = (
                REPRODUCIBLE_RELATIVE * np.maximum(np.abs(old_values), np.abs(new_values))
                + REPRODUCIBLE_ABSOLUTE
            )
            if old_values.shape != new_values.shape or np.any(
                np.abs(old_values - new_values) > tolerance
            ):
                found.append(f"test vector {index} {key}: {new[key]} != committed {old[key]}")
    return found


@dataclass(frozen=True)
class BundleSpec:
    """What differs between the bundles: data, candidates, persona names and the report."""

    name: str
    block: str
    # (block, args) -> the sources, each split on its own
    load_sources: Callable
    autoencoder_candidates: list
    persona_candidates: list
    # centroid in raw units (a dict by feature name) -> persona name
    persona_name: Callable
    # (path, fitted, args) -> summaries to print
    write_report: Callable
    test_vectors: int = TEST_VECTOR_COUNT


def fit_bundle(spec, args):
    """Everything a bundle holds, fitted and checked: the models, graphs, test vectors and the
    scores the report needs."""
    block = load_block(spec.block)
    sources = spec.load_sources(block, args)
    splits = Splits(sources, SEED)
    hidden, clusters, selection_rows = select_models(
        block, splits, SEED, spec.autoencoder_candidates, spec.persona_candidates
    )
    raw_train, labels_train = splits.rows("train")
    models = fitting.fit_models(
        block, raw_train, labels_train, hidden, clusters, SEED, spec.persona_name
    )

    training_scores = models.score(raw_train)
    scores_by_source = [
        models.score(source.raw[index]) for source, index in zip(sources, splits.held_out)
    ]
    raw_held_out, labels_held_out = splits.rows("held_out")
    held_out_scores = models.score(raw_held_out)
    picks = pick_test_vectors(
        splits, scores_by_source, np.random.default_rng(SEED), spec.test_vectors
    )
    test_vectors = [test_vector(models, name, label, raw) for name, label, raw in picks]

    autoencoder_model = graphs.autoencoder_graph(models.autoencoder)
    personas_model = graphs.personas_graph(models.kmeans.cluster_centers_)
    for name, model in (("autoencoder", autoencoder_model), ("personas", personas_model)):
        graphs.check_standard_operators(name, model)
    test_raw = np.array([vector["raw"] for vector in test_vectors])
    test_deviation = graphs.float32_deviation(
        models, autoencoder_model, personas_model, test_raw, models.score(test_raw)
    )
    # A tenth of the VFN's tolerance: tract sums in another order than the reference runtime.
    if max(test_deviation.values()) > graphs.VFN_TOLERANCE / 10:
        raise SystemExit(f"{spec.name}: the float32 graphs miss the test vectors: {test_deviation}")
    held_out_deviation = graphs.float32_deviation(
        models, autoencoder_model, personas_model, raw_held_out, held_out_scores
    )
    versions = {package: version(package) for package in PACKAGES}
    manifest = {
        "name": spec.name,
        "features": block.name,
        "feature_names": list(block.feature_names),
        "mean": [float(value) for value in models.mean],
        "std": [float(value) for value in models.std],
        "autoencoder": {
            "file": "autoencoder.onnx",
            "input": graphs.INPUT,
            "output": graphs.RECONSTRUCTION,
            "calibration": models.calibration,
        },
        "personas": {
            "file": "personas.onnx",
            "input": graphs.INPUT,
            "output": graphs.DISTANCES,
            "names": models.persona_names,
            "hostile_share": models.hostile_share,
            "temperature": models.temperature,
        },
        "test_vectors": test_vectors,
        "training": {
            "seed": SEED,
            "rows": {
                "training": len(labels_train),
                "held_out": len(labels_held_out),
                "autoencoder": int((labels_train == 0).sum()),
            },
            "sources": [
                {
                    "name": source.name,
                    "about": source.about,
                    "training": len(train),
                    "held_out": len(held_out),
                }
                for source, train, held_out in zip(sources, splits.train, splits.held_out)
            ],
            "sklearn": versions["scikit-learn"],
            "versions": versions,
            "opset": graphs.OPSET,
            "autoencoder": {
                "hidden_layer_sizes": list(hidden),
                "activation": "relu",
                "epochs": int(models.autoencoder.n_iter_),
            },
            "personas": {"clusters": clusters, "initialisations": fitting.KMEANS_INITIALISATIONS},
            "held_out_roc_auc": {
                key: float(roc_auc_score(labels_held_out, held_out_scores[key]))
                for key in ("anomaly", "persona_risk", "combined")
            },
        },
    }
    held_out = []
    start = 0
    for source, index in zip(sources, splits.held_out):
        held_out.append((source.name, source.label[index], slice(start, start + len(index))))
        start += len(index)
    return SimpleNamespace(
        spec=spec,
        block=block,
        sources=sources,
        splits=splits,
        clusters=clusters,
        selection_rows=selection_rows,
        models=models,
        raw_train=raw_train,
        labels_train=labels_train,
        training_scores=training_scores,
        raw_held_out=raw_held_out,
        labels_held_out=labels_held_out,
        held_out_scores=held_out_scores,
        held_out=held_out,
        autoencoder_model=autoencoder_model,
        personas_model=personas_model,
        held_out_deviation=held_out_deviation,
        versions=versions,
        manifest=manifest,
    )


def train(out_dir, args, spec):
    """Fits `spec`'s bundle and writes it to `out_dir`; returns its manifest and the report's
    summaries."""
    fitted = fit_bundle(spec, args)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(fitted.autoencoder_model, out_dir / "autoencoder.onnx")
    onnx.save(fitted.personas_model, out_dir / "personas.onnx")
    (out_dir / "manifest.json").write_text(json.dumps(fitted.manifest, indent=1) + "\n")
    summaries = spec.write_report(out_dir / "report.md", fitted, args)
    return fitted.manifest, summaries


def datasets_base_report(path, fitted, args):
    """report.md of datasets-base, with the shared captures replayed; returns their verdicts."""
    models, labels_train = fitted.models, fitted.labels_train
    capture_lines, capture_summaries = capture_section(args.vfn_bin, args.pcaps, models)
    sources, splits = fitted.sources, fitted.splits
    write_report(
        path,
        {
            "name": fitted.spec.name,
            "command": args.command,
            "versions": fitted.versions,
            "seed": SEED,
            "models": models,
            "data_rows": [
                [
                    source.name,
                    source.about,
                    f"{int((source.label[train] == 0).sum())} / {int(source.label[train].sum())}",
                    f"{int((source.label[held] == 0).sum())} / {int(source.label[held].sum())}",
                ]
                for source, train, held in zip(sources, splits.train, splits.held_out)
            ],
            "selection_rows": fitted.selection_rows,
            "benign_training_rows": int((labels_train == 0).sum()),
            "held_out": fitted.held_out,
            "held_out_scores": fitted.held_out_scores,
            "assigned_sizes": np.bincount(
                models.kmeans.labels_, minlength=fitted.clusters
            ).tolist(),
            "float32_deviation": fitted.held_out_deviation,
            "benign_percentiles": {
                key: tuple(
                    float(value)
                    for value in np.quantile(
                        fitted.training_scores[key][labels_train == 0], [0.95, 0.99]
                    )
                )
                for key in ("anomaly", "persona_risk", "combined")
            },
            "graph_rows": [
                [
                    "autoencoder.onnx",
                    ", ".join(graphs.operators(fitted.autoencoder_model)),
                    graphs.OPSET,
                ],
                [
                    "personas.onnx",
                    ", ".join(graphs.operators(fitted.personas_model)),
                    graphs.OPSET,
                ],
            ],
            "capture_lines": capture_lines,
        },
    )
    summaries = []
    for capture in capture_summaries:
        flagged = f"{capture['detected']} of {capture['attack_flows']} attack flows"
        summaries.append(
            f"{capture['capture']}: {capture['verdict']} ({flagged} at anomaly >= 0.95)"
        )
    return summaries


BUNDLES = {
    MODEL_NAME: BundleSpec(
        name=MODEL_NAME,
        block=BLOCK,
        load_sources=lambda block, args: load_sources(block, args.flows),
        autoencoder_candidates=AUTOENCODER_CANDIDATES,
        persona_candidates=PERSONA_CANDIDATES,
        persona_name=fitting.persona_name,
        write_report=datasets_base_report,
    ),
    lab.MODEL_NAME: BundleSpec(
        name=lab.MODEL_NAME,
        block=lab.BLOCK,
        load_sources=lambda block, args: lab.load_lab_sources(block, args.lab_flows),
        autoencoder_candidates=lab.AUTOENCODER_CANDIDATES,
        persona_candidates=lab.PERSONA_CANDIDATES,
        persona_name=lab.persona_name,
        write_report=lab.write_lab_report,
    ),
}


def check(spec, out_dir, args):
    """Retrains `spec` in a temporary directory and compares its test vectors with out_dir's."""
    committed_path = out_dir / "manifest.json"
    if not committed_path.is_file():
        raise SystemExit(f"--check: no manifest at {committed_path} to compare with")
    committed = json.loads(committed_path.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="models-check-"))
    try:
        retrained, _ = train(workdir, args, spec)
    finally:
        shutil.rmtree(workdir)
    found = differences(committed, retrained)
    if found:
        print(f"{spec.name}: training is not reproducible:", *found, sep="\n  ", file=sys.stderr)
        return False
    vectors = len(retrained["test_vectors"])
    print(
        f"{spec.name}: reproducible: {vectors} test vectors match {committed_path} "
        f"within {REPRODUCIBLE_RELATIVE} relative"
    )
    return True


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=TRAINED, help="the folder of the bundles' folders"
    )
    parser.add_argument(
        "--only", choices=list(BUNDLES), action="append", help="this bundle only (repeatable)"
    )
    parser.add_argument(
        "--check", action="store_true", help="retrain elsewhere and compare with --out's manifests"
    )
    parser.add_argument("--flows", type=Path, default=SHARED_DATASETS / "flows")
    parser.add_argument("--pcaps", type=Path, default=SHARED_DATASETS / "pcaps")
    parser.add_argument("--lab-flows", type=Path, default=lab.LAB_FLOWS)
    parser.add_argument("--vfn-bin", type=Path, default=REPOSITORY / "target" / "release" / "vfn")
    parser.add_argument(
        "--command", default="python models/train/train.py", help="the command to name in report.md"
    )
    args = parser.parse_args()
    names = args.only or list(BUNDLES)

    if not args.check:
        for name in names:
            out_dir = args.out / name
            manifest, summaries = train(out_dir, args, BUNDLES[name])
            print(f"wrote {out_dir}")
            print("held-out ROC AUC:", json.dumps(manifest["training"]["held_out_roc_auc"]))
            for summary in summaries:
                print(summary)
        return
    reproducible = [check(BUNDLES[name], args.out / name, args) for name in names]
    if not all(reproducible):
        sys.exit(1)


if __name__ == "__main__":
    main()
