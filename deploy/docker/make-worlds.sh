#!/bin/sh
# One-shot service `world`: generate the synthetic fraud and donor worlds under ROOT
# (ROOT/fraud, ROOT/donors), each unless a readable world is already there, so that a
# restarted stack reuses them.
# Usage: make-worlds.sh ROOT ACCOUNTS DAYS DONORS SEED
set -eu
root="$1" accounts="$2" days="$3" donors="$4" seed="$5"

is_world() {
    python -c "import sys; from models.worlds import open_world; open_world(sys.argv[1])" "$1" 2>/dev/null
}

if is_world "$root/fraud"; then
    echo "reusing the fraud world in $root/fraud"
else
    tributary generate fraud --accounts "$accounts" --days "$days" --seed "$seed" --out "$root/fraud"
fi
if is_world "$root/donors"; then
    echo "reusing the donor world in $root/donors"
else
    tributary generate donors --donors "$donors" --seed "$seed" --out "$root/donors"
fi
