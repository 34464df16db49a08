#!/usr/bin/env bash
# Clipping study v2 (issue 17), end to end: tune lr per variant on seeds 100-101's validation
# split (tune.yaml), run each variant at its tuned lr over sigma x seeds (study.yaml), then
# write the tables. Run from the repository root (on the shared machine through
# ../shared/tools/heavy):  bash experiments/clipping/run.sh [RUNS_DIR]  (default runs/clip_v2)
# Sweeps resume, so a rerun only runs what is missing. The measurement that chose S = 8 came
# first:  python experiments/clipping/grad_norms.py experiments/clipping_study.yaml \
#           --bounds 2 4 8 16 --out experiments/results/clipping_study_v2/grad_norms.md
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
# two more seeds (added after seeds 0-2 had run; same lr, same grid)
for variant in flat per_layer_adaptive per_layer_uniform; do
  lr=$(sed -E "s/.*${variant} ([0-9.e-]+)[,.].*/\1/" <<<"$tuned")
  "${fedsim[@]}" sweep experiments/clipping/study.yaml -o dp.clipping="$variant" \
    -o client.lr="$lr" -o "sweep.seeds=[3, 4]" --out "$runs/${variant}_s34"
done
# per-sample gradient norms along the study's own flat trajectory (S = 8, sigma 0.95, the
# tuned lr 0.005)
python experiments/clipping/grad_norms.py experiments/clipping/study.yaml -o client.lr=0.005 \
  -o dp.noise_multiplier=0.95 --bounds 2 8 --out "$results/grad_norms_study.md"
python experiments/clipping/table.py study "$results/study.md" \
  "$runs/flat" "$runs/per_layer_adaptive" "$runs/per_layer_uniform" \
  "$runs/flat_s34" "$runs/per_layer_adaptive_s34" "$runs/per_layer_uniform_s34"
