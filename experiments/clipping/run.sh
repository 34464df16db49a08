#!/usr/bin/env bash
# Clipping study v2 (issue 17), end to end: tune lr per variant on seeds 100-101's validation
# split (tune.yaml), then run each variant at its tuned lr over sigma x seeds (study.yaml),
# then write the tables. Run from the repository root (on the shared machine, through
# ../shared/tools/heavy):  bash experiments/clipping/run.sh [RUNS_DIR]   (default runs/clip_v2)
# Sweeps resume, so a rerun only runs what is missing.
set -euo pipefail
runs=${1:-runs/clip_v2}
results=experiments/results/clipping_study_v2
fedsim=(python -m fedsim.cli)

"${fedsim[@]}" sweep experiments/clipping/tune.yaml --out "$runs/tune"
python experiments/clipping/table.py tune "$runs/tune" "$results/tune.md"
tuned=$(tail -n 1 "$results/tune.md")   # "Tuned lr: flat X, per_layer_adaptive Y, per_layer_uniform Z."
for variant in flat per_layer_adaptive per_layer_uniform; do
  lr=$(sed -E "s/.*${variant} ([0-9.e-]+)[,.].*/\1/" <<<"$tuned")
  echo "== $variant at lr $lr"
  "${fedsim[@]}" sweep experiments/clipping/study.yaml -o dp.clipping="$variant" \
    -o client.lr="$lr" --out "$runs/$variant"
done
python experiments/clipping/table.py study "$results/study.md" \
  "$runs/flat" "$runs/per_layer_adaptive" "$runs/per_layer_uniform"
