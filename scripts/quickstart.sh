#!/usr/bin/env bash
# Install everything, build the example image, then with Shipyard: train a model, deploy it
# behind an endpoint, ask it for predictions, and delete the endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

WORK=.cache/quickstart
IMAGE=shipyard-example/quickstart:latest
STAMP=$(date +%Y%m%d-%H%M%S)
JOB=quickstart-train-$STAMP
ENDPOINT=quickstart-$STAMP
# file:// locations must lie in a folder the server allows (home and /tmp by default; this
# checkout may be anywhere): the quickstart's own folder.
SHIPYARD=(.venv/bin/shipyard --data-dir "$WORK/state" --file-roots "$PWD/$WORK")
rm -rf "$WORK/context" && mkdir -p "$WORK/context/wheels" "$WORK/data"
echo "== building the example image $IMAGE"
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/context/wheels" .
cp examples/quickstart/{train.py,inference.py,Dockerfile} "$WORK/context/"
docker build -q --label org.shipyard.managed=true -t "$IMAGE" "$WORK/context" >/dev/null

.venv/bin/python - "$WORK/data/points.csv" <<'PY'
import random, sys
random.seed(0)
with open(sys.argv[1], "w") as fh:
    for _ in range(200):
        x = random.uniform(-1, 1)
        fh.write(f"{x},{3 * x + 0.5 + random.gauss(0, 0.05)}\n")
PY

echo "== training $JOB"
"${SHIPYARD[@]}" train "$IMAGE" --name "$JOB" \
  --channel training="$WORK/data" \
  --hp epochs=200 --hp learning-rate=0.5 \
  --metric loss='loss=([0-9.]+)' \
  --output "$WORK/output"
MODEL="$WORK/output/$JOB/output/model.tar.gz"
echo "== model artifacts: $MODEL"

# From here on an endpoint may exist: whatever happens, it is deleted on the way out.
delete_endpoint() {
  echo "== deleting the endpoint $ENDPOINT"
  "${SHIPYARD[@]}" endpoints delete "$ENDPOINT" --wait || true
}
trap delete_endpoint EXIT
echo "== deploying it as endpoint $ENDPOINT"
"${SHIPYARD[@]}" deploy "$IMAGE" --name "$ENDPOINT" --model-data "$MODEL" \
  --env SAGEMAKER_PROGRAM=inference.py

echo "== invoking: y for x = 0, 1, 2 (the data follow y = 3x + 0.5)"
PREDICTION=$("${SHIPYARD[@]}" invoke "$ENDPOINT" --body '[0, 1, 2]' --content-type application/json)
echo "prediction: $PREDICTION"
