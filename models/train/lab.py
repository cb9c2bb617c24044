"""The lab-cic bundle: the cic block (26 features) trained on flows recorded through the VFN's own
feature extractor in the lab (models/data/lab-flows.csv, made by `vfn-record-lab`; its README
says how), and its report.

The recording holds one row per feature snapshot of a flow (a record's 4th packet, each doubling
after, its end), labelled by the recorder: `kind` is the attack of the phase in which c1 started
the flow, else `normal` (every flow of c2, and c1's in its normal phases). Each kind is a source of
its own here, so that the 70 / 30 split is stratified by kind.

The bundle is meant for the lab: c1 scans srv while c2 goes on with normal traffic, and the VFN
acts on a source once 5 of its snapshots within 10 s reach the threat threshold (0.8 by default).
So the report weighs false positives on c2's normal traffic, and replays the recording through
that decision rule, besides the usual held-out metrics.
"""

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from features import REPOSITORY, Source
from report import metric_row, personas_section, shown, table

MODEL_NAME = "lab-cic"
BLOCK = "cic"
LAB_FLOWS = REPOSITORY / "models" / "data" / "lab-flows.csv"
# Wider than datasets-base's (26 features rather than 10); chosen on validation ROC AUC likewise.
AUTOENCODER_CANDIDATES = [(12, 4, 12), (16, 6, 16), (24, 8, 24)]
PERSONA_CANDIDATES = [5, 6, 7, 8]
NORMAL = "normal"
# What each kind of row is, in the order the report lists them.
KINDS = {
    NORMAL: "benign: c2 throughout and c1 in its normal phases (curl GETs of 1 KB to 2 MB, pings, "
    "UDP exchanges, small POSTs)",
    "syn_scan": "c1: nmap -sS of srv's ports 1-2000",
    "connect_scan": "c1: nmap -sT of srv's ports 1-1000",
    "syn_flood": "c1: hping3 -S to srv:80, 3000 SYNs 1 ms apart",
    "ssh_bruteforce": "c1: sshpass + ssh, 160 wrong root passwords, 4 at a time",
    "exfiltration": "c1: 24 socat uploads of 2 to 20 MiB of random bytes to srv:9000",
}
# Rows of one attack kind trained on at most, evenly spread over the recording: the scans and the
# flood give thousands of near-identical probes, which would otherwise claim personas that the
# brute force and the exfiltration need. Benign rows are all kept.
ATTACK_ROWS_MAX = 2000
C1 = "198.18.1.2"
C2 = "198.18.2.2"
# The VFN's defaults (models/src/threat.rs, config/src/model.rs): outside every segment the
# impact term is 0, so threat = 0.6 anomaly + 0.3 min(anomaly, persona risk).
THREAT_WEIGHT_ANOMALY = 0.6
THREAT_WEIGHT_CONFIDENCE = 0.3
THREAT_THRESHOLD = 0.8
FLOWS_TO_ACT = 5
WINDOW_MS = 10_000.0
THRESHOLDS = (0.95, 0.99)
SCORES = {
    "anomaly": "autoencoder anomaly",
    "persona_risk": "persona risk",
    "combined": "combined (mean of anomaly and persona risk)",
    "threat": "threat (the VFN's default weights outside every segment, at most 0.9; its "
    "threshold 0.8)",
}


@dataclass
class LabSource(Source):
    """One kind's rows, with who started each flow, its trigger and when the snapshot was taken."""

    src: np.ndarray
    trigger: np.ndarray
    taken_ms: np.ndarray


def load_lab_sources(block, path, attack_rows_max=ATTACK_ROWS_MAX):
    """One source per kind; an attack kind's rows thinned to `attack_rows_max` (None: all)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(
            f"{path}: no lab recording; make one with vfn-record-lab (models/data/README.md)"
        )
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    needed = list(block.feature_names) + ["src", "trigger", "taken_unix_ms", "label", "kind"]
    missing = [name for name in needed if rows and name not in rows[0]]
    if not rows or missing:
        raise SystemExit(f"{path}: no rows, or no columns {missing}")
    by_kind = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    unknown = sorted(set(by_kind) - set(KINDS))
    if unknown:
        raise SystemExit(f"{path}: unknown kinds {unknown}")
    sources = []
    for kind in KINDS:
        members = by_kind.get(kind, [])
        if not members:
            raise SystemExit(f"{path}: no rows of kind {kind}")
        if kind != NORMAL and attack_rows_max is not None and len(members) > attack_rows_max:
            kept = np.linspace(0, len(members) - 1, attack_rows_max).round().astype(int)
            members = [members[index] for index in kept]
        labels = np.array([int(row["label"]) for row in members])
        if np.any(labels != int(kind != NORMAL)):
            raise SystemExit(f"{path}: rows of kind {kind} with the wrong label")
        sources.append(
            LabSource(
                name=kind,
                about=KINDS[kind],
                raw=np.array(
                    [[float(row[name]) for name in block.feature_names] for row in members]
                ),
                label=labels,
                src=np.array([row["src"] for row in members]),
                trigger=np.array([row["trigger"] for row in members]),
                taken_ms=np.array([float(row["taken_unix_ms"]) for row in members]),
            )
        )
    return sources


def persona_name(centroid):
    """A lab persona's name from its centroid in raw units (a dict by feature name); the first
    rule that holds wins (README.md has the table). Counts, bytes and gaps are geometric means
    (they average log1p values), the protocol columns the cluster's share of each protocol, the
    rest arithmetic means."""
    fwd_packets, bwd_packets = centroid["fwd_packets"], centroid["bwd_packets"]
    fwd_bytes, bwd_bytes = centroid["fwd_bytes"], centroid["bwd_bytes"]
    if centroid["proto_icmp"] >= 0.5:
        return "pinger"
    if centroid["proto_udp"] >= 0.5:
        return "udp exchanger"
    if fwd_packets <= 3 and bwd_packets <= 1.5:
        if centroid["rst_count"] >= 0.5:
            return "flooder" if centroid["syn_count"] >= 1.5 else "scanner"
        return "connection opener"
    if fwd_bytes >= 10_000 and fwd_bytes >= 4 * bwd_bytes:
        return "data exporter"
    balanced = fwd_bytes <= 4 * bwd_bytes and bwd_bytes <= 4 * fwd_bytes
    if fwd_packets >= 8 and bwd_packets >= 8 and balanced and max(fwd_bytes, bwd_bytes) <= 20_000:
        return "ssh guesser"
    if fwd_bytes >= 4 * bwd_bytes:
        return "uploader"
    return "web client"


def threat(scores):
    anomaly = scores["anomaly"]
    confidence = np.minimum(anomaly, scores["persona_risk"])
    return THREAT_WEIGHT_ANOMALY * anomaly + THREAT_WEIGHT_CONFIDENCE * confidence


def with_threat(scores):
    return {**scores, "threat": threat(scores)}


def held_out_rows(fitted):
    """Per held-out row (in fitted.held_out_scores order): kind, source address."""
    kinds, sources = [], []
    for source, index in zip(fitted.sources, fitted.splits.held_out):
        kinds += [source.name] * len(index)
        sources += list(source.src[index])
    return np.array(kinds), np.array(sources)


def held_out_section(fitted, scores):
    kinds, _ = held_out_rows(fitted)
    labels = fitted.labels_held_out
    lines = ["## Held-out results", ""]
    lines.append(
        "The 30 % of each kind that training never saw (the split is stratified by kind). Every "
        "row is one snapshot of a flow. P / R / F1: precision, recall and F1 of \"attack\" when "
        "the score is at or above the threshold. Per attack kind: ROC AUC of that kind's rows "
        "against all benign held-out rows, and the recall (share of its rows flagged)."
    )
    for key, about in SCORES.items():
        # Outside every segment the threat stays at or below 0.9 (its impact term is 0), so it
        # is measured at the VFN's threshold alone.
        thresholds = [THREAT_THRESHOLD] if key == "threat" else list(THRESHOLDS)
        header = ["rows", "count", "attack", "ROC AUC"] + [f"P / R / F1 at {t}" for t in thresholds]
        rows = [metric_row("**all**", labels, scores[key], thresholds)]
        lines += ["", f"### {about}", ""] + table(header, rows)
        lines.append("")
        header = ["attack kind", "rows", "ROC AUC vs benign"] + [
            f"recall at {t}" for t in thresholds
        ]
        benign = kinds == NORMAL
        kind_rows = []
        for kind in KINDS:
            if kind == NORMAL:
                continue
            members = kinds == kind
            both = benign | members
            auc = roc_auc_score(labels[both], scores[key][both])
            kind_rows.append(
                [kind, int(members.sum()), f"{auc:.3f}"]
                + [f"{(scores[key][members] >= t).mean():.3f}" for t in thresholds]
            )
        lines += table(header, kind_rows)
    return lines


def false_positive_section(fitted, scores):
    kinds, sources = held_out_rows(fitted)
    benign = kinds == NORMAL
    lines = ["## False positives on normal traffic", ""]
    lines.append(
        "Shares of the benign held-out rows at or above each threshold. The anomaly is calibrated "
        "on the benign training rows (0.95 is their 95th percentile), so about 5 % of benign rows "
        "reach 0.95 by construction; what the VFN acts on is the threat, which also needs the "
        "personas to agree."
    )
    lines.append("")
    header = ["benign rows of", "rows", "anomaly >= 0.95", "anomaly >= 0.99", "combined >= 0.95"]
    header.append(f"threat >= {THREAT_THRESHOLD}")
    rows = []
    for name, members in (
        (f"c2 ({C2})", benign & (sources == C2)),
        (f"c1 ({C1}), its normal phases", benign & (sources == C1)),
        ("all", benign),
    ):
        if not members.any():
            rows.append([name, 0, "", "", "", ""])
            continue
        rows.append(
            [
                name,
                int(members.sum()),
                f"{(scores['anomaly'][members] >= 0.95).mean():.4f}",
                f"{(scores['anomaly'][members] >= 0.99).mean():.4f}",
                f"{(scores['combined'][members] >= 0.95).mean():.4f}",
                f"{(scores['threat'][members] >= THREAT_THRESHOLD).mean():.4f}",
            ]
        )
    return lines + table(header, rows)


def decisions(taken_ms, threats):
    """The VFN's rule for one source (models/src/engine.rs) over its snapshots in time order:
    snapshots at or over the threshold are evidence, counted in a window that opens at the first
    one and lasts WINDOW_MS; at FLOWS_TO_ACT the source is acted on. The action's time to live
    is left out: evidence starts again after each decision, so that every time the rule would
    fire is counted. Returns the indices (into the arguments) of the snapshots that fire it."""
    fired = []
    evidence, window_start = 0, 0.0
    for index in np.argsort(taken_ms, kind="stable"):
        if threats[index] < THREAT_THRESHOLD:
            continue
        now = taken_ms[index]
        if evidence == 0 or now - window_start >= WINDOW_MS:
            window_start, evidence = now, 0
        evidence += 1
        if evidence >= FLOWS_TO_ACT:
            fired.append(index)
            evidence = 0
    return fired


def replay_rows(fitted, models, part, recording):
    """Kind, source, time and threat of every row of `part`: the whole recording (every row,
    none thinned out), or the held-out rows."""
    kinds, sources, taken, threats = [], [], [], []
    for source_index, source in enumerate(recording if part == "all" else fitted.sources):
        index = (
            np.arange(len(source.label)) if part == "all" else fitted.splits.held_out[source_index]
        )
        kinds += [source.name] * len(index)
        sources += list(source.src[index])
        taken += list(source.taken_ms[index])
        threats += list(threat(models.score(source.raw[index])))
    return np.array(kinds), np.array(sources), np.array(taken), np.array(threats)


def decision_section(fitted, models, recording):
    lines = ["## The VFN's decision rule replayed", ""]
    lines.append(
        f"Each source's snapshots in the order they were taken, through the scorer's rule: threat "
        f"at or above {THREAT_THRESHOLD}, {FLOWS_TO_ACT} snapshots within {WINDOW_MS / 1000:.0f} "
        "s. \"Decisions\" counts every time the rule fires (evidence starts again after each; the "
        "action's time to live, which would hold back the next decisions, is left out). First, "
        "over every row of the recording, none thinned out (training rows included, so the "
        "benign rows look more ordinary than new traffic would); then over the held-out rows "
        "alone (under a third of the snapshots, so evidence gathers more slowly)."
    )
    summary = {}
    for part, title in (("all", "every row"), ("held_out", "held-out rows only")):
        kinds, sources, taken, threats = replay_rows(fitted, models, part, recording)
        rows = []
        for address in (C1, C2):
            mine = np.flatnonzero(sources == address)
            fired = mine[decisions(taken[mine], threats[mine])]
            for kind in KINDS:
                members = mine[kinds[mine] == kind]
                if not len(members):
                    continue
                hits = fired[kinds[fired] == kind]
                first = (
                    f"{(taken[hits[0]] - taken[members].min()) / 1000:.1f}" if len(hits) else ""
                )
                rows.append(
                    [
                        address,
                        kind,
                        len(members),
                        int((threats[members] >= THREAT_THRESHOLD).sum()),
                        len(hits),
                        first,
                    ]
                )
                summary[(part, address, kind)] = len(hits)
        lines += ["", f"### {title}", ""]
        lines += table(
            [
                "source",
                "kind",
                "snapshots",
                f"threat >= {THREAT_THRESHOLD}",
                "decisions",
                "s from the kind's first snapshot to the first decision",
            ],
            rows,
        )
    return lines, summary


def persona_kinds_section(fitted, models):
    """Which kinds each persona's training rows are."""
    lines = ["", "Training rows per persona and kind:", ""]
    assigned = models.kmeans.labels_
    kinds = np.concatenate(
        [[source.name] * len(index) for source, index in zip(fitted.sources, fitted.splits.train)]
    )
    rows = []
    for k, name in enumerate(models.persona_names):
        counts = Counter(kinds[assigned == k])
        rows.append([name] + [counts.get(kind, 0) for kind in KINDS])
    return lines + table(["persona"] + list(KINDS), rows)


def write_lab_report(path, fitted, args):
    models = fitted.models
    scores = with_threat(fitted.held_out_scores)
    recording = load_lab_sources(models.block, args.lab_flows, attack_rows_max=None)
    lines = [f"# Anomaly models `{fitted.spec.name}`: training report", ""]
    lines.append(f"Produced by `{args.command}` (from the repository root).")
    lines.append("")
    lines.append(
        "Versions: "
        + ", ".join(f"{package} {version}" for package, version in fitted.versions.items())
        + f". Seed {fitted.manifest['training']['seed']}. Feature block `{models.block.name}` "
        f"({len(models.block)} features): " + ", ".join(models.block.feature_names) + "."
    )
    lines += ["", "## Data", ""]
    lines.append(
        f"`{shown(args.lab_flows)}`: feature snapshots recorded by the VFN itself (`[scoring] "
        "record`) while `vfn-record-lab` ran its phases in the lab; `models/data/README.md` says "
        f"how. An attack kind with more than {ATTACK_ROWS_MAX} rows is thinned to that many, "
        "evenly spread over its rows (the scans' and the flood's probes are near-identical); "
        "benign rows are all kept. Each kind is split 70 / 30 into training and held-out rows "
        "with the fixed seed. The autoencoder trains on the benign training rows only; the "
        "personas on all training rows."
    )
    lines.append("")
    data_rows = []
    for source, train, held in zip(fitted.sources, fitted.splits.train, fitted.splits.held_out):
        by_source = Counter(source.src)
        data_rows.append(
            [
                source.name,
                source.about,
                ", ".join(f"{address} {count}" for address, count in sorted(by_source.items())),
                len(train),
                len(held),
            ]
        )
    recorded = Counter(source.name for source in recording for _ in source.label)
    for row in data_rows:
        row.insert(3, recorded[row[0]])
    lines += table(
        ["kind", "what", "rows by source (used)", "recorded", "training", "held-out"], data_rows
    )
    lines += ["", "## Model selection", ""]
    lines.append(
        "On a validation fifth of each kind's training rows, models fitted on the other four "
        "fifths; the chosen ones are refitted on the whole training split. Autoencoder: ROC AUC "
        "of the reconstruction error; personas: ROC AUC of the persona risk."
    )
    lines.append("")
    lines += table(["candidate", "validation ROC AUC", "chosen"], fitted.selection_rows)
    lines += ["", "## Calibration", ""]
    calibration = np.array(models.calibration)
    benign_training = int((fitted.labels_train == 0).sum())
    lines.append(
        f"{len(calibration)} points over {benign_training} benign training errors. "
        + ", ".join(
            f"anomaly {level} at error {np.interp(level, calibration[:, 1], calibration[:, 0]):.5g}"
            for level in (0.5, 0.9, 0.95, 0.99)
        )
        + f", 1.0 from error {calibration[-1, 0]:.5g} (the largest)."
    )
    lines += [""] + held_out_section(fitted, scores)
    lines += [""] + false_positive_section(fitted, scores)
    replay_lines, replay = decision_section(fitted, models, recording)
    lines += [""] + replay_lines
    assigned_sizes = np.bincount(models.kmeans.labels_, minlength=fitted.clusters).tolist()
    lines += [""] + personas_section(models, assigned_sizes)
    lines += persona_kinds_section(fitted, models)
    lines += ["", "## The exported graphs in float32", ""]
    lines.append(
        "The ONNX graphs run in float32 by the ONNX reference runtime on every held-out row, "
        "against scikit-learn in float64; the largest deviation of each score as the VFN measures "
        "it (|found - expected| / max(|expected|, 1); the VFN's tolerance is 1e-3): "
        + ", ".join(f"{key} {value:.2g}" for key, value in fitted.held_out_deviation.items())
        + "."
    )
    Path(path).write_text("\n".join(lines) + "\n")

    kinds, sources = held_out_rows(fitted)
    c2_benign = (kinds == NORMAL) & (sources == C2)
    summaries = [
        "c2 held-out benign rows at anomaly >= 0.95: "
        f"{(scores['anomaly'][c2_benign] >= 0.95).mean():.4f}, at threat >= {THREAT_THRESHOLD}: "
        f"{(scores['threat'][c2_benign] >= THREAT_THRESHOLD).mean():.4f}",
        "recall at anomaly >= 0.95 per kind: "
        + ", ".join(
            f"{kind} {(scores['anomaly'][kinds == kind] >= 0.95).mean():.3f}"
            for kind in KINDS
            if kind != NORMAL
        ),
        "decision rule over every row: "
        + ", ".join(
            f"{address} {kind} {count}"
            for (part, address, kind), count in replay.items()
            if part == "all" and count
        ),
    ]
    return summaries
