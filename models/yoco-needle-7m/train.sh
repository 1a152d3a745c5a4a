#!/usr/bin/env bash
# Train the embedded needle models (YOCO and a same-size Transformer) concurrently on ONE GPU, then measure
# needle retrieval on a haystack never seen in training (Paul Graham essays; training prose is Shakespeare).
# Run on the device machine from the repo root, with the haystack texts copied into .data/ (see README.md here):
#   OUT=/tmp/out bash models/yoco-needle-7m/train.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-} || exit 1
export PYTHONUNBUFFERED=1 YOCO_EVAL_COMPILE=0  # small model: skip torch.compile warm-up, eager elementwise is fine
common="--haystack .data/shakespeare --max-len ${MAXLEN:-768} --batch 64 --variants single --lr 2e-3 --warmup 2000 --steps 100000 \
  --minutes ${MINUTES:-6.5} --workers 6 --eval-haystack .data/pg --eval-lengths 512,768,1024,2048"
python3 -m yoco_eval.train --arch yoco --out "$OUT/yoco-needle-7m" $common > "$OUT/train_yoco.log" 2>&1 &
python3 -m yoco_eval.train --arch transformer --out "$OUT/transformer-needle-7m" $common > "$OUT/train_transformer.log" 2>&1 &
wait
tail -4 "$OUT/train_yoco.log" "$OUT/train_transformer.log"
