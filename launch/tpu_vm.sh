#!/usr/bin/env bash
# Run sed_jax on a Cloud TPU VM (one host or a pod slice: every worker runs the same command and
# JAX's multi-controller runtime joins them; jax.distributed.initialize() is called because
# SED_JAX_DISTRIBUTED=1).
#
#   launch/tpu_vm.sh [--dry-run] create|setup|run|sweep|logs|delete [extra --config.* flags]
#
# Set (environment):
#   PROJECT           your GCP project                       (required)
#   ZONE              e.g. us-central2-b                     (required)
#   BUCKET            gs://your-bucket (TFDS data and workdirs live there; required for run/sweep;
#                     each worker mirrors the datasets it reads to ~/.cache/sed_jax/tfds)
#   TPU_NAME          default sed-jax
#   ACCELERATOR_TYPE  default v4-8 (v4-32 etc. for a pod slice)
#   RUNTIME_VERSION   default tpu-ubuntu2204-base
#   CONFIG            default configs/student.py
#   RUN_NAME          default: the config file's name
#   SWEEP             which get_sweep(name) of the config for `sweep` (default: its first)
# --dry-run prints every command instead of running it.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
CMD="${1:-}"; shift || true

TPU_NAME="${TPU_NAME:-sed-jax}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${CONFIG:-configs/student.py}"
RUN_NAME="${RUN_NAME:-$(basename "${CONFIG%%:*}" .py)}"
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"

need() { for v in "$@"; do [[ -n "${!v:-}" ]] || { echo "tpu_vm.sh: set $v" >&2; exit 2; }; done; }
run() { if (( DRY_RUN )); then printf '%q ' "$@"; echo; else "$@"; fi; }
tpu() { run gcloud compute tpus tpu-vm "$@" --project="$PROJECT" --zone="$ZONE"; }
on_all() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

job() {  # The command of one run: $1 workdir suffix, rest extra flags.
  local suffix="$1"; shift
  echo "SED_JAX_DISTRIBUTED=1 TFDS_DATA_DIR=$BUCKET/tensorflow_datasets python -m sed_jax.main \
--config=$CONFIG --workdir=$BUCKET/runs/$RUN_NAME$suffix $* > ~/sed_jax_$RUN_NAME$suffix.log 2>&1"
}

start() {  # Runs the given commands one after the other, in the background, on every worker.
  local joined; joined=$(printf '%s; ' "$@")
  on_all "cd ~/sed_jax && . .venv/bin/activate && nohup bash -c '$joined' > /dev/null 2>&1 &"
}

case "$CMD" in
  create)
    need PROJECT ZONE
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ;;
  setup)
    need PROJECT ZONE
    tpu scp --recurse --worker=all "$REPO_DIR/pyproject.toml" "$REPO_DIR/README.md" \
      "$REPO_DIR/sed_jax" "$REPO_DIR/configs" "$TPU_NAME:~/sed_jax/"
    on_all "cd ~/sed_jax && python3 -m venv .venv && . .venv/bin/activate && \
pip install -q --upgrade pip && pip install -q -e '.[tpu]'" ;;
  run)
    need PROJECT ZONE BUCKET
    start "$(job "" "$@")" ;;
  sweep)
    need PROJECT ZONE BUCKET
    # The sweep is defined beside get_config (get_sweep); its runs share the hosts in turn.
    # Read first (not a process substitution): a bad config or sweep name stops the script.
    runs="$(cd "$REPO_DIR" && python3 -m sed_jax.sweep --config="$CONFIG" ${SWEEP:+--sweep="$SWEEP"})"
    jobs=(); i=0
    while IFS= read -r overrides; do
      [[ -n "$overrides" ]] || continue
      jobs+=("$(job "_sweep$i" "$overrides" "$@")"); i=$((i + 1))
    done <<< "$runs"
    start "${jobs[@]}" ;;
  logs)
    need PROJECT ZONE
    tpu ssh "$TPU_NAME" --worker=0 --command="tail -n 50 ~/sed_jax_$RUN_NAME*.log" ;;
  delete)
    need PROJECT ZONE
    tpu delete "$TPU_NAME" --quiet ;;
  *)
    sed -n '2,19p' "$0"; exit 2 ;;
esac
