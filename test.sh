#!/usr/bin/env bash
# Runs Volley's whole test suite on a fresh machine that has a Rust
# toolchain and Python: installs what the tests need when it is missing,
# then runs `cargo test --workspace` (extra arguments are passed to it).
#
# - moto_server (Python package moto[server]): the S3-compatible server of
#   the S3 and multi-host tests;
# - kubernetes-validate (Python): checks the Kubernetes manifests;
# - ip and tc (iproute2) and nft (nftables): the multi-host tests create
#   network namespaces, shape and cut their links; they need root;
# - chromium and chromium-driver (Debian), selenium and prometheus-client
#   (Python): the web UI is driven in headless Chromium, and /metrics is
#   parsed by the official Prometheus client's parser.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v moto_server >/dev/null 2>&1; then
    echo "test.sh: installing moto[server] (the tests' S3 server)" >&2
    python3 -m pip install --quiet 'moto[server]'
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "test.sh: installing kubernetes-validate (checks deploy/kubernetes)" >&2
    python3 -m pip install --quiet kubernetes-validate
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

for module in selenium prometheus_client; do
    if ! python3 -c "import $module" >/dev/null 2>&1; then
        package=${module/_/-}
        echo "test.sh: installing $package (the web UI and /metrics tests)" >&2
        python3 -m pip install --quiet "$package"
    fi
done

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: the multi-host tests need root and ${missing[*]}; run as root" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]} (network namespaces, headless browser)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the multi-host tests create network namespaces and need root" >&2
    exit 1
fi

# A one-off run gains nothing from incremental compilation, whose caches
# take gigabytes; CI once ran out of disk with them (override by setting
# CARGO_INCREMENTAL). Free space is printed so a full disk is diagnosed
# at a glance.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h "${CARGO_TARGET_DIR:-target}" "${TMPDIR:-/tmp}" 2>/dev/null | sed 's/^/test.sh: /' >&2 || true
exec cargo test --workspace "$@"
