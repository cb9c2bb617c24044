"""Dataset rows to raw feature vectors, as models/features.json defines them.

The order, names and transforms of a block's features come from features.json alone. What this
module knows is, per feature name, how each kind of flow record gives its value: the `zeek` and
`nb15` entries of the definition and, for the VFN's own records, its `definition` entry.
"""

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[2]
FEATURES_JSON = REPOSITORY / "models" / "features.json"

# How features.json's transforms are computed, and undone to name personas in raw units.
TRANSFORMS = {
    "log1p": lambda x: np.log1p(np.maximum(x, 0.0)),
    "identity": lambda x: x,
}
INVERSE_TRANSFORMS = {
    "log1p": np.expm1,
    "identity": lambda x: x,
}


@dataclass(frozen=True)
class Block:
    """One block of features.json: its feature names and transforms, in its order."""

    name: str
    feature_names: tuple[str, ...]
    transforms: tuple[str, ...]

    def __len__(self):
        return len(self.feature_names)

    def transform(self, raw):
        transformed = np.array(raw, dtype=np.float64)
        for column, transform in enumerate(self.transforms):
            transformed[:, column] = TRANSFORMS[transform](transformed[:, column])
        return transformed

    def untransform(self, transformed):
        raw = np.array(transformed, dtype=np.float64)
        for column, transform in enumerate(self.transforms):
            raw[:, column] = INVERSE_TRANSFORMS[transform](raw[:, column])
        return raw


def load_block(name, path=FEATURES_JSON):
    """The block called `name`, with the features of the blocks it extends first (as the VFN's
    FeatureBlock::named orders them)."""
    definition = json.loads(Path(path).read_text())
    blocks = {block["name"]: block for block in definition["blocks"]}
    features = []
    visited = []
    next_name = name
    while next_name is not None:
        if next_name in visited:
            raise ValueError(f"block {next_name!r} extends itself")
        visited.append(next_name)
        block = blocks[next_name]
        features = block["features"] + features
        next_name = block.get("extends")
    for feature in features:
        if feature["transform"] not in TRANSFORMS:
            raise ValueError(
                f"feature {feature['name']!r}: unknown transform {feature['transform']!r}"
            )
    return Block(
        name=name,
        feature_names=tuple(feature["name"] for feature in features),
        transforms=tuple(feature["transform"] for feature in features),
    )


def ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (a mean size with no packet)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# Per feature name, its raw value from the columns of each kind of record (dicts of numpy arrays).
ZEEK_FEATURES = {
    "duration_us": lambda c: c["duration"] * 1e6,
    "fwd_packets": lambda c: c["orig_pkts"],
    "bwd_packets": lambda c: c["resp_pkts"],
    "fwd_bytes": lambda c: c["orig_ip_bytes"],
    "bwd_bytes": lambda c: c["resp_ip_bytes"],
    "fwd_mean_size": lambda c: ratio(c["orig_ip_bytes"], c["orig_pkts"]),
    "bwd_mean_size": lambda c: ratio(c["resp_ip_bytes"], c["resp_pkts"]),
    "proto_tcp": lambda c: c["proto_tcp"],
    "proto_udp": lambda c: c["proto_udp"],
    "proto_icmp": lambda c: c["proto_icmp"],
}

NB15_FEATURES = {
    "duration_us": lambda c: c["dur"] * 1e6,
    "fwd_packets": lambda c: ratio(c["sbytes"], c["smean"]),
    "bwd_packets": lambda c: ratio(c["dbytes"], c["dmean"]),
    "fwd_bytes": lambda c: c["sbytes"],
    "bwd_bytes": lambda c: c["dbytes"],
    "fwd_mean_size": lambda c: c["smean"],
    "bwd_mean_size": lambda c: c["dmean"],
    "proto_tcp": lambda c: c["proto=tcp"],
    "proto_udp": lambda c: c["proto=udp"],
    # nb15 folds ICMP into proto=other, which sets none of the three.
    "proto_icmp": lambda c: np.zeros_like(c["dur"]),
}

VFN_FEATURES = {
    "duration_us": lambda c: c["duration_us"],
    "fwd_packets": lambda c: c["fwd_packets"],
    "bwd_packets": lambda c: c["bwd_packets"],
    "fwd_bytes": lambda c: c["fwd_bytes"],
    "bwd_bytes": lambda c: c["bwd_bytes"],
    "fwd_mean_size": lambda c: ratio(c["fwd_bytes"], c["fwd_packets"]),
    "bwd_mean_size": lambda c: ratio(c["bwd_bytes"], c["bwd_packets"]),
    "proto_tcp": lambda c: (c["proto"] == 6).astype(np.float64),
    "proto_udp": lambda c: (c["proto"] == 17).astype(np.float64),
    "proto_icmp": lambda c: np.isin(c["proto"], (1, 58)).astype(np.float64),
}


def raw_vectors(block, columns, features_by_name):
    """The block's raw (untransformed) vectors, one row per record; a missing value counts 0."""
    missing = [name for name in block.feature_names if name not in features_by_name]
    if missing:
        raise ValueError(f"no mapping from this dataset for features {missing}")
    clean = {
        key: np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0)
        for key, value in columns.items()
    }
    return np.column_stack([features_by_name[name](clean) for name in block.feature_names])


@dataclass
class Source:
    """One dataset's records as raw block vectors with their labels (0 benign, 1 malicious)."""

    name: str
    about: str
    raw: np.ndarray
    label: np.ndarray


def read_numeric_csv(path):
    """A CSV of numbers; an empty cell is NaN."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return {
        key: np.array([float(row[key]) if row[key] != "" else math.nan for row in rows])
        for key in rows[0]
    }


def read_zeek_conn(path):
    """A Zeek conn log, TSV with its #fields header or JSON lines: a dict of strings per record."""
    with open(path) as file:
        lines = [line.rstrip("\n") for line in file if line.strip()]
    if lines[0].startswith("{"):
        return [
            {key: "" if value is None else str(value) for key, value in json.loads(line).items()}
            for line in lines
        ]
    header = next(line for line in lines if line.startswith("#fields"))
    fields = header.split("\t")[1:]
    return [dict(zip(fields, line.split("\t"))) for line in lines if not line.startswith("#")]


def zeek_columns(records):
    def number(value):
        # Zeek writes an unset field as "-"; JSON logs leave it out.
        return math.nan if value in ("", "-", "(empty)") else float(value)

    columns = {
        key: np.array([number(record.get(key, "")) for record in records])
        for key in ("duration", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes")
    }
    for proto in ("tcp", "udp", "icmp"):
        columns[f"proto_{proto}"] = np.array(
            [float(record["proto"] == proto) for record in records]
        )
    return columns


def load_ctu(path):
    table = read_numeric_csv(path)
    columns = {
        "duration": table["duration"],
        "orig_pkts": table["orig_pkts"],
        "resp_pkts": table["resp_pkts"],
        "orig_ip_bytes": table["orig_ip_bytes"],
        "resp_ip_bytes": table["resp_ip_bytes"],
        "proto_tcp": table["proto=tcp"],
        "proto_udp": table["proto=udp"],
        "proto_icmp": table["proto=icmp"],
    }
    return columns, table["label"].astype(int)


def load_nb15(path):
    table = read_numeric_csv(path)
    return table, table["label"].astype(int)


def load_labelled_zeek(path):
    """A conn log labelled by netflowlabeler (`label`: Benign, Malicious; Unknown left out)."""
    records = [
        record for record in read_zeek_conn(path) if record["label"] in ("Benign", "Malicious")
    ]
    labels = np.array([int(record["label"] == "Malicious") for record in records])
    return zeek_columns(records), labels


def load_scan_log(path):
    """A conn log recorded during a port scan: every record counts as malicious."""
    records = read_zeek_conn(path)
    return zeek_columns(records), np.ones(len(records), dtype=int)


def load_sources(block, flows_dir):
    flows_dir = Path(flows_dir)
    specs = [
        ("CTU", "IoT-23 Zeek records", load_ctu, "CTU.csv", ZEEK_FEATURES),
        ("nb15", "UNSW-NB15 records", load_nb15, "nb15.csv", NB15_FEATURES),
        (
            "ctu-sme-11",
            "RemcosRAT capture (CTU-SME-11), hand-labelled Zeek conn log, Unknown rows left out",
            load_labelled_zeek,
            "test18-malicious-ctu-sme-11-win_zeek-labeled_conn.log.labeled",
            ZEEK_FEATURES,
        ),
        (
            "scan-horizontal",
            "horizontal port scan, Zeek conn log",
            load_scan_log,
            "port-scans_horizontal_conn.log",
            ZEEK_FEATURES,
        ),
        (
            "scan-vertical",
            "vertical port scan, Zeek conn log",
            load_scan_log,
            "port-scans_vertical_conn.log",
            ZEEK_FEATURES,
        ),
    ]
    sources = []
    for name, about, load, file_name, features_by_name in specs:
        columns, labels = load(flows_dir / file_name)
        sources.append(
            Source(
                name, f"{about}: {file_name}", raw_vectors(block, columns, features_by_name), labels
            )
        )
    return sources


def timestamp_ns(text):
    """Seconds with up to 9 decimals as integer nanoseconds (float64 epoch seconds lose them)."""
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])


def read_vfn_flows(path):
    """`vfn flows-from-pcap` output: the records as dicts of strings and their columns."""
    with open(path, newline="") as file:
        records = list(csv.DictReader(file))
    columns = {
        key: np.array([float(record[key]) for record in records])
        for key in ("proto", "fwd_packets", "fwd_bytes", "bwd_packets", "bwd_bytes")
    }
    columns["duration_us"] = np.array(
        [(timestamp_ns(record["last"]) - timestamp_ns(record["first"])) / 1e3 for record in records]
    )
    return records, columns
