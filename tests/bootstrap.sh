#!/usr/bin/env bash
# The README's two commands on a fresh Debian machine, as root:
#   tests/bootstrap.sh lab    install what is missing, build, run `vfn lab`
#   tests/bootstrap.sh test   install what is missing, build, run the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."

# xsk-rs (libxdp, libbpf) builds from C; vfn-perf's BPF programs build with clang and the
# headers of libbpf-dev and linux-libc-dev; the lab and the tests drive namespaces, veth,
# ethtool, sysctl, ping and python3 (raw frames through AF_PACKET, standard library only);
# `vfn-perf lab` loads nftables rule sets into its router namespace; the API tests run vfnctl as
# other users (setpriv, util-linux) and a Python gRPC client from a virtual environment, and
# read captures back with tshark; the IPFIX export is checked by nfcapd/nfdump and tshark; the
# traffic scenarios (tests/src/scenarios.rs, vfn-record-lab) run curl against python3's
# http.server, sshpass and ssh against an sshd of their own, nmap, hping3 and socat.
PACKAGES=(clang llvm libelf-dev zlib1g-dev libpcap-dev m4 pkg-config make gcc
          libbpf-dev linux-libc-dev iproute2 procps ethtool iputils-ping python3 python3-venv
          nftables util-linux tshark nfdump curl socat nmap hping3 sshpass openssh-client
          openssh-server)

# The Python client of the API tests: grpcio and friends, pinned, in target/py-venv.
python_environment() {
    local venv=target/py-venv
    if ! cmp -s tests/python/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
        cp tests/python/requirements.txt "$venv/requirements.txt"
    fi
}

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "run as root: the lab and the tests create network namespaces and attach XDP programs" >&2
        exit 1
    fi
}

case "${1:-}" in
lab)
    install_packages
    cargo build --release -p vfn
    exec target/release/vfn lab
    ;;
test)
    install_packages
    python_environment
    # One clean build: incremental state would only add gigabytes to a fresh clone's disk.
    export CARGO_INCREMENTAL=0
    cargo fmt --all -- --check
    cargo build --workspace --all-targets
    cargo clippy --workspace --all-targets -- -D warnings
    # The documentation's links resolve (a renamed item breaks them silently otherwise).
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
    # The anomaly models retrain from scratch to the committed bundles' test vectors (fixed
    # seeds, pinned packages in target/models-venv); the Rust tests then check tract's scores.
    bash models/train/run.sh --check
    # Root tests (namespaces, AF_XDP) live in their own test binaries, which cargo runs one
    # after another; inside a binary they take a lock, so none overlap.
    cargo test --workspace
    ;;
*)
    echo "usage: $0 lab|test" >&2
    exit 2
    ;;
esac
