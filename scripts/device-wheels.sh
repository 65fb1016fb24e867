#!/usr/bin/env bash
# Wheels a bare GPU machine needs to run sublim's GPU checks (scripts/gpu-check.sh), into .whl/.
#
# The lent H200 machine has torch, transformers, peft, accelerate, pyarrow, pandas and pytest but
# no package registry and none of: trl, datasets (+ dill, multiprocess), hydra-core, omegaconf
# (+ antlr4), submitit and its Hydra launcher. This fetches exactly those, at sublim's pins, for
# the machine's Python (PY_VERSION, default 3.12), without their dependencies (the machine has
# them). peft is carried too, so the adapter code runs at sublim's pinned version.
#   bash scripts/device-wheels.sh            # then: device run with carry [".whl"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
PIP=${PIP:-python3 -m pip}
pin() { sed -n "s/^ *\"\($1==[^\"]*\)\",*$/\1/p" pyproject.toml; }

rm -rf .whl && mkdir -p .whl
pkgs=(trl datasets hydra-core omegaconf hydra-submitit-launcher submitit peft)
pins=()
for p in "${pkgs[@]}"; do
  v=$(pin "$p"); [[ -n $v ]] || { echo "no pin for $p in pyproject.toml" >&2; exit 1; }
  pins+=("$v")
done
# datasets' own pins, satisfied by the versions sublim's lock resolves to
pins+=(dill==0.4.1 multiprocess==0.70.19)
platforms=()
for n in 2_28 2_27 2_17; do platforms+=(--platform "manylinux_${n}_x86_64"); done
$PIP download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
# antlr4 4.9.3 (omegaconf's pin) is published as source only: build its pure-Python wheel here
$PIP wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
du -sh .whl
