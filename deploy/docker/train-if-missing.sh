#!/bin/sh
# One-shot service `train`: train the served models (quick profile) into
# $TRIBUTARY_MODEL_DIR, each unless a complete version of it is already there:
# - $TRIBUTARY_FRAUD_MODEL on the fraud world, trained straight into the model directory.
#   `served` (the worker's default) trains the contenders, fusion-gated, lightgbm and
#   their hybrid, and the worker serves the one training chose on validation; a named
#   hybrid needs its components, so it trains them too;
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

fraud_model="$TRIBUTARY_FRAUD_MODEL"
contenders="--model fusion-gated --model lightgbm --model hybrid"
case "$fraud_model" in
    served)
        # What an earlier training recorded; none yet: the hybrid, trained last of them.
        fraud_model="$(python -c "import sys; from models.artifacts import served_name; print(served_name(sys.argv[1], 'fraud', 'hybrid'))" "$artifacts")";;
    hybrid) ;;
    *) contenders="--model $fraud_model";;
esac
if has_model "$fraud_model"; then
    echo "a trained $fraud_model is present; not training it"
else
    # shellcheck disable=SC2086  # the options are words on purpose
    tributary train fraud --data "$1" --out "$TRIBUTARY_MODEL_DIR" --profile quick $contenders
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
