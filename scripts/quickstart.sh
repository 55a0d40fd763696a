#!/usr/bin/env bash
# Install everything, build the example training image, and train a model with Shipyard.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

WORK=.cache/quickstart
IMAGE=shipyard-example/quickstart:latest
rm -rf "$WORK/context" && mkdir -p "$WORK/context/wheels" "$WORK/data"
echo "== building the example image $IMAGE"
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/context/wheels" .
cp examples/quickstart/train.py examples/quickstart/Dockerfile "$WORK/context/"
docker build -q --label org.shipyard.managed=true -t "$IMAGE" "$WORK/context" >/dev/null

.venv/bin/python - "$WORK/data/points.csv" <<'PY'
import random, sys
random.seed(0)
with open(sys.argv[1], "w") as fh:
    for _ in range(200):
        x = random.uniform(-1, 1)
        fh.write(f"{x},{3 * x + 0.5 + random.gauss(0, 0.05)}\n")
PY

echo "== training"
.venv/bin/shipyard --data-dir "$WORK/state" train "$IMAGE" \
  --channel training="$WORK/data" \
  --hp epochs=200 --hp learning-rate=0.5 \
  --metric loss='loss=([0-9.]+)' \
  --output "$WORK/output"
echo "== model artifacts in $WORK/output"
find "$WORK/output" -name '*.tar.gz'
