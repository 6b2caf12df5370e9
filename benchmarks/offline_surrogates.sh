#!/usr/bin/env bash
# Surrogate benchmark on a machine with a GPU and no network (run from the repository root).
# Installs the shipped wheels (pymatgen-core, pydantic, ...) into /tmp/site, then runs
# benchmarks/surrogate_models.py from the featurised sets in .devrun/data (no matminer needed):
# CPU models on every core but one, torch models on CUDA pinned to the last core, in parallel.
# Results (five JSON files, results.md, two logs: 8 files) go to $OUT.  QUICK=--quick for a smoke test;
# NO_INSTALL=1 PY=.venv/bin/python to use an environment that has the packages already.
set -u
# Filling .devrun (git-ignored) on a machine with the project's .venv and network:
#   .devrun/whl:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
#                 --implementation cp --platform manylinux2014_x86_64 -d .devrun/whl pymatgen-core
#                 monty pydantic pydantic-core annotated-types typing-inspection typing-extensions
#                 ruamel.yaml tabulate orjson msgpack uncertainties  (the .venv's versions)
#   .devrun/data: benchmarks/surrogate_models.py --data enthalpies --save-data .devrun/data, and
#                 the same with --data chgnet-srtio
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/devrun-out}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -z "${NO_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devrun/whl/*.whl \
    2>&1 | grep -v "WARNING: Running pip as"
  # without pip: a wheel is a zip archive of the installed files
  PYTHONPATH=/tmp/site $PY -c "import pydantic_core, pymatgen.core" 2>/dev/null || PYTHONPATH= $PY -c "
import glob, zipfile
for w in glob.glob('.devrun/whl/*.whl'):
    zipfile.ZipFile(w).extractall('/tmp/site')
print('wheels unpacked')"
fi
if [ -z "${NO_INSTALL:-}" ]; then export PYTHONPATH=/tmp/site:$PWD; else export PYTHONPATH=$PWD; fi
QUICK=${QUICK:-}
MD=$(mktemp -d)                       # markdown tables, joined into $OUT/results.md at the end
# the CPUs this process may use (not necessarily 0..N-1): all but the last for the CPU models
read -r N CSET LAST < <($PY -c "import os; c = sorted(os.sched_getaffinity(0)); \
print(len(c), ','.join(map(str, c[:-1] or c)), c[-1])")
CT=$((N > 1 ? N - 1 : 1))             # CPU threads
DEV=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
{ echo "cores $N, cpu threads $CT, device $DEV"; nvidia-smi -L 2>/dev/null; $PY -c \
  "import torch, botorch, sklearn; print('torch', torch.__version__, 'botorch', botorch.__version__, 'sklearn', sklearn.__version__)"; } \
  > "$MD/env.txt"
cat "$MD/env.txt"
B="$PY benchmarks/surrogate_models.py --load-data .devrun/data $QUICK"
cpu() { taskset -c "$CSET" timeout "$1" $B --device cpu --threads "$CT" "${@:2}"; }
gpu() { taskset -c "$LAST" timeout "$1" $B --device "$DEV" --threads 1 "${@:2}"; }
taskset -c "$LAST" true 2>/dev/null || taskset() { shift 2; "$@"; }  # no pinning then
T0=$SECONDS
(
  cpu 190 --data enthalpies --models mean,mlp_ensemble,rf,gbr,gp \
      --json "$OUT/enthalpies-cpu.json" --markdown $MD/t1.md
  cpu 90 --data chgnet-srtio --models mean,mlp_ensemble,rf \
      --json "$OUT/srtio-cpu.json" --markdown $MD/t2.md
  # CGCNN on the CPU: one fold at a sixth of the epochs (its time per epoch is the point)
  cpu 80 --data chgnet-srtio --models cgcnn --max-folds 1 --override '{"cgcnn": {"epochs": 10}}' \
      --json "$OUT/srtio-cgcnn-cpu.json" --markdown $MD/t3.md
) > "$OUT/cpu.log" 2>&1 &
(
  gpu 220 --data enthalpies --models mlp_ensemble,gp,mlp_wide \
      --json "$OUT/enthalpies-cuda.json" --markdown $MD/t4.md
  gpu 140 --data chgnet-srtio --models mlp_ensemble,cgcnn \
      --json "$OUT/srtio-cuda.json" --markdown $MD/t5.md
) > "$OUT/gpu.log" 2>&1
wait
for f in "$MD"/env.txt "$MD"/t1.md "$MD"/t4.md "$MD"/t2.md "$MD"/t5.md "$MD"/t3.md; do
  [ -f "$f" ] && { cat "$f"; echo; }
done > "$OUT/results.md"
cat "$OUT/results.md"
echo "total ${SECONDS}s (benchmarks $((SECONDS - T0))s)"
