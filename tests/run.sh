#!/usr/bin/env bash
# Runs cohort's whole test suite on a fresh Debian 12 machine with Rust installed:
# installs what the tests need (Slurm, munge, OpenMPI — Debian packages, via apt — and the
# OpenAI Python client, via pip), then
# checks formatting and lints, and runs every test, including real `sbatch` jobs on local
# Slurm clusters that the tests bring up and tear down themselves.
#
# Needs root (apt, and slurmd runs as root), or passwordless sudo for the install step.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$*" $(( $(date +%s) - started )) >&2; }

step "installing test dependencies"
if [[ $(id -u) -eq 0 ]]; then
  tests/slurm/cluster.sh install
else
  sudo tests/slurm/cluster.sh install
fi

step "installing Python test clients"
# The official OpenAI client talks to `cohort sim` in the simulator's tests; pyzmq plays
# a real libzmq engine publisher for the KV-event subscriber's tests.
python3 -m pip install --quiet --disable-pip-version-check openai==1.109.1 pyzmq==27.3.0

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy -j2 --workspace --all-targets --locked -- -D warnings

step "cargo test"
# --show-output: the Slurm tests report the clusters they started and the job ids they ran.
cargo test -j2 --workspace --locked -- --show-output

step "cargo test: Hugging Face tokenizer support (feature hf)"
# Off by default (the tokenizers crate is a large build); its tests still run here:
# the simulator's and the router's tokenizer, the benchmark's exact-length text prompts.
cargo test -j2 --locked -p cohort-rank -p cohort-router -p cohort-bench --features cohort-rank/hf,cohort-router/hf,cohort-bench/hf --lib

step "cargo test: MPI bootstrap (feature mpi) under mpirun"
# Off by default (rsmpi needs an MPI library and libclang to build): the bootstrap alone
# under `mpirun -n 4`, then a whole `mpirun -n 4 cohort launch` job.
cargo clippy -j2 --locked -p cohort-rank -p cohort --features cohort/mpi --all-targets -- -D warnings
cargo test -j2 --locked -p cohort-rank --features mpi --lib --test mpi -- bootstrap mpi --show-output
cargo test -j2 --locked -p cohort --features mpi --test it -- launch_mpi --show-output

step "all tests passed"
