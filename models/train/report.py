"""report.md: held-out metrics, the personas, and captures replayed through the VFN's extractor."""

import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from features import REPOSITORY, VFN_FEATURES, raw_vectors, read_vfn_flows

THRESHOLDS = (0.95, 0.99)
FLOW_IDENTITY = ("src", "sport", "dst", "dport", "proto", "flow_start")
SCORES = {
    "anomaly": "autoencoder anomaly (calibrated reconstruction error)",
    "persona_risk": "persona risk (hostile shares weighted by persona probabilities)",
    "combined": "combined score (mean of anomaly and persona risk)",
}

# What each capture holds, from the README and SOURCE files beside it (or, where there is none,
# the Slips dataset README it comes from), and which of its flows are the attack's.
KNOWN_ATTACKS = {
    "test19-malicious-ssh_malicious-ssh-bruteforce.pcap": (
        "SSH brute force: nmap's ssh-brute script (1 user, 40 passwords) against 147.32.80.37 "
        "on port 902/TCP (test19-malicious-ssh_README.md). Attack flows: TCP to port 902.",
        lambda record: record["proto"] == "6" and record["dport"] == "902",
    ),
    "test12-icmp-portscan.pcap": (
        "ICMP scan of 192.168.1.0/24 from 192.168.1.109 (Slips dataset test12): echo probes to "
        "every address, a few hosts answering. The capture holds nothing else. Attack flows: all.",
        lambda record: True,
    ),
    "test-cc_test-cc-capture-2.pcap": (
        "Slips' synthetic command-and-control test: 147.32.80.37 runs `curl https://testing.com` "
        "every 2 to 3 s (semi-periodic beacon); the capture also holds the host's DNS traffic "
        "(port 53). The Slips dataset README describes it; no README is beside the pcap. "
        "Attack flows: TCP to port 443.",
        lambda record: record["proto"] == "6" and record["dport"] == "443",
    ),
}


def shown(path):
    """A path as the report names it: from the repository root where it is in the repository or
    beside it (../shared), so that a report reads the same on every machine."""
    path = Path(path).resolve()
    if path.is_relative_to(REPOSITORY):
        return str(path.relative_to(REPOSITORY))
    if path.is_relative_to(REPOSITORY.parent):
        return str(Path("..") / path.relative_to(REPOSITORY.parent))
    return str(path)


def metric_row(name, labels, score, thresholds):
    """Rows, malicious, ROC AUC and precision / recall / F1 at each threshold."""
    auc = roc_auc_score(labels, score) if len(set(labels)) == 2 else float("nan")
    cells = [
        name,
        str(len(labels)),
        str(int(labels.sum())),
        f"{auc:.3f}" if np.isfinite(auc) else "n/a (one class)",
    ]
    for threshold in thresholds:
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, score >= threshold, average="binary", zero_division=0
        )
        cells.append(f"{precision:.3f} / {recall:.3f} / {f1:.3f}")
    return cells


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def held_out_section(held_out, scores, benign_percentiles):
    """held_out: (source name, labels, rows of `scores`) per source; benign_percentiles: per
    score, its 95th and 99th percentiles over the benign training rows."""
    lines = ["## Held-out results", ""]
    lines.append(
        "The 30 % of each source that training never saw. P / R / F1: precision, recall and F1 of "
        '"malicious" when the score is at or above the threshold: the fixed thresholds 0.95 and '
        "0.99, then the score's own 95th and 99th percentiles over the benign training rows (for "
        "the anomaly, these are 0.95 and 0.99 by construction; the persona risk never exceeds the "
        "largest hostile share, so the fixed thresholds can be out of its reach). The scan sources "
        "are all malicious: no AUC, and their precision is 1 whenever anything is flagged."
    )
    all_labels = np.concatenate([labels for _, labels, _ in held_out])
    for key, about in SCORES.items():
        thresholds = list(THRESHOLDS) + list(benign_percentiles[key])
        header = ["source", "rows", "malicious", "ROC AUC"] + [
            f"P / R / F1 at {t}" for t in THRESHOLDS
        ]
        header += [
            f"P / R / F1 at benign p{p} = {t:.3f}"
            for p, t in zip((95, 99), benign_percentiles[key])
        ]
        rows = [
            metric_row(name, labels, scores[key][rows], thresholds)
            for name, labels, rows in held_out
        ]
        rows.append(metric_row("**all**", all_labels, scores[key], thresholds))
        lines += ["", f"### {about}", ""] + table(header, rows)
    return lines


def personas_section(models, assigned_sizes):
    block = models.block
    lines = ["## Personas", ""]
    lines.append(
        f"KMeans with {len(models.persona_names)} clusters on all training rows (standardised). "
        "Centroids in raw units (counts and bytes are geometric means, the protocol columns the "
        "cluster's share of each protocol). Temperature of the persona softmax: "
        f"{models.temperature:.4f}."
    )
    lines.append("")
    header = ["persona"] + list(block.feature_names) + ["training rows", "hostile share"]
    rows = []
    for k, centroid in enumerate(models.centroids_raw()):
        rows.append(
            [models.persona_names[k]]
            + [f"{value:.3g}" for value in np.where(np.abs(centroid) < 5e-4, 0.0, centroid)]
            + [assigned_sizes[k], f"{models.hostile_share[k]:.3f}"]
        )
    return lines + table(header, rows)


def flow_text(record):
    source = f"{record['src']}:{record['sport']}"
    return f"{source} → {record['dst']}:{record['dport']} proto {record['proto']}"


def replay_capture(vfn_bin, pcap, models, workdir):
    output = Path(workdir) / (pcap.stem + ".csv")
    subprocess.run(
        [str(vfn_bin), "flows-from-pcap", "--input", str(pcap), "--output", str(output)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records, columns = read_vfn_flows(output)
    return records, columns, models.score(raw_vectors(models.block, columns, VFN_FEATURES))


def attack_verdict(records, scores, is_attack):
    """How many of the attack's records the anomaly score flags, and a verdict on them.

    A record that starts after its flow's first packet holds what followed the end of the flow's
    TCP connection (a late ACK, a retransmission): it is counted apart, since flagging it says
    nothing of whether the connection itself looked anomalous.
    """
    attack = np.array([is_attack(record) for record in records])
    trailing = np.array([record["first"] != record["flow_start"] for record in records])
    anomaly = scores["anomaly"]
    flagged = anomaly >= 0.95
    first_records = attack & ~trailing
    detected = int((flagged & first_records).sum())
    attack_flows = int(first_records.sum())
    share = detected / attack_flows if attack_flows else 0.0
    verdict = "detected" if share >= 0.5 else "partly detected" if detected else "not detected"
    text = (
        f"**Attack {verdict}** by the anomaly score: {detected} of its {attack_flows} flows (their "
        f"first records) at or above 0.95, {int((anomaly >= 0.99)[first_records].sum())} "
        "at or above 0.99"
    )
    if np.any(attack & trailing):
        text += (
            f"; {int((flagged & attack & trailing).sum())} of its {int((attack & trailing).sum())} "
            "trailing records (packets after the connection ended) at or above 0.95"
        )
    if np.any(~attack):
        others = int((~attack).sum())
        text += f"; other records at or above 0.95: {int((flagged & ~attack).sum())} of {others}"
    text += (
        f". Mean persona risk of the attack's records: {scores['persona_risk'][attack].mean():.3f}."
    )
    return text, {"verdict": verdict, "detected": detected, "attack_flows": attack_flows}


def capture_section(vfn_bin, pcaps_dir, models):
    lines = ["## Captures replayed through the VFN's extractor", ""]
    if not Path(vfn_bin).is_file():
        return lines + [
            f"Skipped: no VFN binary at `{shown(vfn_bin)}` (set VFN_BIN to a built `vfn`)."
        ], []
    lines.append(
        f"Each capture in `{shown(pcaps_dir)}` through `{shown(vfn_bin)} flows-from-pcap`, each "
        "flow record scored from the base block computed from its CSV columns (duration = last - "
        "first). A flow has several records when packets follow the end of its TCP connection."
    )
    summaries = []
    with tempfile.TemporaryDirectory() as workdir:
        for pcap in sorted(Path(pcaps_dir).glob("*.pcap")):
            records, columns, scores = replay_capture(vfn_bin, pcap, models, workdir)
            anomaly = scores["anomaly"]
            lines += ["", f"### {pcap.name}", ""]
            about, is_attack = KNOWN_ATTACKS.get(
                pcap.name, ("No description of this capture is known.", None)
            )
            lines.append(about)
            # A flow's records share its key and first packet (docs/flows.md, Replaying a capture).
            flows = len({tuple(record[key] for key in FLOW_IDENTITY) for record in records})
            lines += [
                "",
                f"Flows: {flows}, in {len(records)} records. Records with anomaly at or above "
                f"0.99: {int((anomaly >= 0.99).sum())}, at or above 0.95: "
                f"{int((anomaly >= 0.95).sum())}.",
                "",
            ]
            if is_attack is not None:
                verdict_text, verdict = attack_verdict(records, scores, is_attack)
                lines += [verdict_text, ""]
                summaries.append({"capture": pcap.name, **verdict})
            top = np.argsort(-anomaly, kind="stable")[:5]
            rows = []
            for index in top:
                record = records[index]
                persona = scores["persona"][index]
                probability = scores["persona_probabilities"][index, persona]
                rows.append(
                    [
                        flow_text(record),
                        f"{record['fwd_packets']} / {record['fwd_bytes']}",
                        f"{record['bwd_packets']} / {record['bwd_bytes']}",
                        f"{columns['duration_us'][index] / 1e6:.3f}",
                        f"{anomaly[index]:.4f}",
                        f"{models.persona_names[persona]} ({probability:.2f})",
                        f"{scores['persona_risk'][index]:.3f}",
                    ]
                )
            lines += ["Top 5 records by anomaly:", ""]
            lines += table(
                [
                    "record",
                    "fwd packets / bytes",
                    "bwd packets / bytes",
                    "duration s",
                    "anomaly",
                    "persona",
                    "persona risk",
                ],
                rows,
            )
            by_source = Counter(record["src"] for record in records)
            source_rows = []
            for source, count in sorted(by_source.items(), key=lambda item: (-item[1], item[0])):
                mask = np.array([record["src"] == source for record in records])
                source_rows.append([source, count, f"{(anomaly[mask] >= 0.95).mean():.3f}"])
            lines += ["", "Per source address:", ""]
            lines += table(["source", "flow records", "share at or above 0.95"], source_rows)
    return lines, summaries


def write_report(path, context):
    """context: a dict of the run's facts; see train.py for its keys."""
    models = context["models"]
    lines = [f"# Anomaly models `{context['name']}`: training report", ""]
    lines.append(f"Produced by `{context['command']}` (from the repository root).")
    lines.append("")
    lines.append(
        "Versions: "
        + ", ".join(f"{package} {version}" for package, version in context["versions"].items())
        + f". Seed {context['seed']}. Feature block `{models.block.name}`: "
        + ", ".join(models.block.feature_names)
        + "."
    )
    lines += ["", "## Data", ""]
    lines.append(
        "Each source split 70 / 30 into training and held-out rows, stratified by label, with the "
        "fixed seed. The autoencoder trains on the benign training rows only; the personas on all "
        "training rows. Every record of the two port-scan logs counts as malicious, including the "
        "few that are no probe (the scanning hosts' DNS lookups and web sessions)."
    )
    lines.append("")
    lines += table(
        ["source", "what", "training benign / malicious", "held-out benign / malicious"],
        context["data_rows"],
    )
    lines += ["", "## Model selection", ""]
    lines.append(
        "On a validation fifth of each source's training rows (stratified), models fitted on the "
        "other four fifths; the chosen ones are then refitted on the whole training split. "
        "Autoencoder: ROC AUC of the reconstruction error; personas: ROC AUC of the persona risk."
    )
    lines.append("")
    lines += table(["candidate", "validation ROC AUC", "chosen"], context["selection_rows"])
    lines += ["", "## Calibration", ""]
    calibration = np.array(models.calibration)
    lines.append(
        f"{len(calibration)} points over {context['benign_training_rows']} benign training errors. "
        + ", ".join(
            f"anomaly {level} at error {np.interp(level, calibration[:, 1], calibration[:, 0]):.5g}"
            for level in (0.5, 0.9, 0.95, 0.99)
        )
        + f", 1.0 from error {calibration[-1, 0]:.5g} (the largest)."
    )
    lines += [""] + held_out_section(
        context["held_out"], context["held_out_scores"], context["benign_percentiles"]
    )
    lines += [""] + personas_section(models, context["assigned_sizes"])
    lines += ["", "## The exported graphs in float32", ""]
    lines.append(
        "The ONNX graphs run in float32 by the ONNX reference runtime on every held-out row, "
        "scored as the VFN scores them, against scikit-learn in float64; the largest deviation of "
        "each score as the VFN measures it (|found - expected| / max(|expected|, 1); the VFN's "
        "tolerance is 1e-3): "
        + ", ".join(f"{key} {value:.2g}" for key, value in context["float32_deviation"].items())
        + "."
    )
    lines.append("")
    lines += table(["graph", "operators", "opset"], context["graph_rows"])
    lines += [""] + context["capture_lines"]
    Path(path).write_text("\n".join(lines) + "\n")
