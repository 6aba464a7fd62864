#!/bin/sh
# One-shot service `train`: train the served models (quick profile) into
# $TRIBUTARY_MODEL_DIR, each unless a complete version of it is already there:
# - $TRIBUTARY_FRAUD_MODEL on the fraud world, trained straight into the model directory;
# - $TRIBUTARY_DONOR_MODEL on the donor world (skipped when that variable is empty),
#   trained in a directory of its own (its report and checkpoints would collide with the
#   fraud model's) and then installed with `tributary install-model`, as an operator
#   rolls out a model (docs/operations.md).
# Usage: train-if-missing.sh FRAUD_WORLD DONOR_WORLD
set -eu
: "${TRIBUTARY_MODEL_DIR:?}" "${TRIBUTARY_FRAUD_MODEL:?}"
artifacts="$TRIBUTARY_MODEL_DIR/artifacts"

has_model() {
    python -c "import sys; from models.artifacts import latest_version; print(latest_version(*sys.argv[1:]))" \
        "$artifacts" "$1" 2>/dev/null
}

if has_model "$TRIBUTARY_FRAUD_MODEL"; then
    echo "a trained $TRIBUTARY_FRAUD_MODEL is present; not training it"
else
    tributary train fraud --data "$1" --out "$TRIBUTARY_MODEL_DIR" --profile quick --model "$TRIBUTARY_FRAUD_MODEL"
fi

donor_model="${TRIBUTARY_DONOR_MODEL-multitarget}"
if [ -z "$donor_model" ]; then
    echo "TRIBUTARY_DONOR_MODEL is empty: no donor model, the worker leaves the donor topics alone"
elif has_model "$donor_model"; then
    echo "a trained $donor_model is present; not training it"
else
    training="$TRIBUTARY_MODEL_DIR/training/donors"
    tributary train donors --data "$2" --out "$training" --profile quick --model "$donor_model"
    version="$(ls "$training/artifacts/$donor_model" | tail -n 1)"
    tributary install-model "$training/artifacts/$donor_model/$version" --model-dir "$TRIBUTARY_MODEL_DIR"
fi
