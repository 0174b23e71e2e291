#!/usr/bin/env bash
# cohort with real vLLM engines on this machine's CPUs, end to end: prepares vLLM 0.32
# (CPU build, cached in ~/.cache/cohort-engines) and a tiny random-weight model, builds
# cohort, then runs tests/engines/vllm_e2e.py (KV-aware routing, a streamed chat, cohort
# bench, a prefill/decode pair over NIXL, a batch job).
#
# Not part of tests/run.sh (CI): the first run downloads ~3.4 GB and takes ~6.5 GB of disk,
# and the three jobs take 5-10 minutes on 2 cores. Run it when an engine adapter, the
# router's handshakes or the launch path change: `tests/engines/run.sh [--keep]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/engines/setup-vllm.sh >/dev/null
cargo build --release -p cohort
exec python3 tests/engines/vllm_e2e.py --cohort target/release/cohort "$@"
