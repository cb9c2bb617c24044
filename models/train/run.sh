#!/usr/bin/env bash
# Trains the anomaly model bundles and exports them for the VFN, in one command from any directory:
#   models/train/run.sh [--out DIR] [--only NAME] [--check]
# --out DIR    where the bundles' folders go (default models/trained: datasets-base, lab-cic)
# --only NAME  this bundle only (datasets-base or lab-cic; repeatable)
# --check      retrain into a temporary directory and fail if the test vectors' scores differ from
#              the manifests under --out (fixed seeds make training reproducible)
# VFN_BIN      a built vfn binary to replay the shared captures with (default target/release/vfn)
set -euo pipefail
train_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repository="$(cd "$train_dir/../.." && pwd)"
venv="$repository/target/models-venv"

# The pinned environment, rebuilt only when requirements.txt changed (as tests/bootstrap.sh does).
if ! cmp -s "$train_dir/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$train_dir/requirements.txt"
    cp "$train_dir/requirements.txt" "$venv/requirements.txt"
fi

# One thread everywhere: BLAS and OpenMP reductions summed in another order per thread count would
# make retrained models differ in their last bits from machine to machine.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# No __pycache__ beside the sources: nothing in the work tree but what is committed.
export PYTHONDONTWRITEBYTECODE=1

out="$repository/models/trained"
only=()
check=()
command="bash models/train/run.sh"
[[ -n "${VFN_BIN:-}" ]] && command="VFN_BIN=$VFN_BIN $command"
while (($#)); do
    case "$1" in
    --out)
        out="${2:?--out needs a directory}"
        command+=" --out $2"
        shift 2
        ;;
    --only)
        only+=(--only "${2:?--only needs a bundle name}")
        command+=" --only $2"
        shift 2
        ;;
    --check)
        check=(--check)
        command+=" --check"
        shift
        ;;
    *)
        echo "usage: $0 [--out DIR] [--only NAME] [--check]" >&2
        exit 2
        ;;
    esac
done
vfn_bin="${VFN_BIN:-$repository/target/release/vfn}"

exec "$venv/bin/python" "$train_dir/train.py" --out "$out" "${only[@]}" "${check[@]}" \
    --vfn-bin "$vfn_bin" --command "$command"
