#!/usr/bin/env bash
# Trains the shipped MiniGrid agents (card: checkpoints/minigrid/README.md): per task a
# novice on the easy variant, then an expert on the hard variant started from the novice's
# weights (a curriculum: DoorKey-8x8 from scratch barely learns). Re-running resumes
# unfinished runs and skips finished ones. Runs from the repo root wherever it is called
# from; writes runs/minigrid_agents/ (then tools/minigrid/ship.py copies the chosen
# weights to checkpoints/minigrid/). Usage: tools/minigrid/train.sh [task ...]
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repo root (this file: tools/minigrid/train.sh)
DUO=${DUO:-.venv/bin/duo}
OUT=${OUT:-runs/minigrid_agents}
TASKS=${*:-DoorKey LavaGap DistShift}
COMMON=(env=minigrid algorithm=ppo_agent_minigrid torch_threads=1 progress=false
        evaluation.train_num_episodes=128 evaluation.num_envs=32)

declare -A NOVICE_STEPS=([DoorKey]=300000 [LavaGap]=500000 [DistShift]=300000)
declare -A EXPERT_STEPS=([DoorKey]=500000 [LavaGap]=1000000 [DistShift]=300000)

train() {  # run_dir, overrides...
  local dir=$1; shift
  if [[ -f $dir/train_result.json ]]; then echo "done: $dir"; return; fi
  local resume=()
  [[ -f $dir/last.pt ]] && resume=(resume=true)
  echo "== $dir"; date
  "$DUO" train --type agent "${COMMON[@]}" "$@" run_dir="$dir" "${resume[@]}"
  date
}

for task in $TASKS; do
  # novice: easy variant only, selected on val_sim; snapshots give the sim_novice
  train "$OUT/$task/novice" env.task="$task" \
    algorithm.total_timesteps="${NOVICE_STEPS[$task]}" algorithm.snapshot_every=2 \
    evaluation.train_splits=[val_sim,val_true]
  # expert: hard variant, from the novice's weights, selected on val_true
  train "$OUT/$task/expert" env.task="$task" env.train.variant=hard \
    algorithm.init_from="$OUT/$task/novice/best_val_sim.pt" \
    algorithm.total_timesteps="${EXPERT_STEPS[$task]}" algorithm.anneal_lr=true \
    evaluation.train_splits=[val_true]
done
