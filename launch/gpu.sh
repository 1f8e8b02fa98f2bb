#!/usr/bin/env bash
# Run sed_jax on one GPU host (all its GPUs: one process, the `data` mesh spans them).
#
#   launch/gpu.sh [--dry-run] setup|run|sweep [extra --config.* flags]
#
# Set (environment): CONFIG (default configs/student.py), WORKDIR_ROOT (default runs),
# TFDS_DATA_DIR (default ~/tensorflow_datasets), SWEEP (which get_sweep(name) of the config;
# default its first). --dry-run prints every command instead.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
CMD="${1:-}"; shift || true
CONFIG="${CONFIG:-configs/student.py}"
WORKDIR_ROOT="${WORKDIR_ROOT:-runs}"
RUN_NAME="$(basename "${CONFIG%%:*}" .py)"
cd "$(dirname "$0")/.."

run() { if (( DRY_RUN )); then printf '%q ' "$@"; echo; else "$@"; fi; }

case "$CMD" in
  setup)
    run python3 -m venv .venv
    run .venv/bin/pip install -e '.[cuda]' ;;
  run)
    run python -m sed_jax.main --config="$CONFIG" --workdir="$WORKDIR_ROOT/$RUN_NAME" "$@" ;;
  sweep)
    # Read first (not a process substitution): a bad config or sweep name stops the script.
    runs="$(python3 -m sed_jax.sweep --config="$CONFIG" ${SWEEP:+--sweep="$SWEEP"})"
    i=0
    while IFS= read -r overrides; do
      [[ -n "$overrides" ]] || continue
      # shellcheck disable=SC2086  # The overrides are separate flags.
      run python -m sed_jax.main --config="$CONFIG" \
        --workdir="$WORKDIR_ROOT/${RUN_NAME}_sweep$i" $overrides "$@"
      i=$((i + 1))
    done <<< "$runs" ;;
  *)
    sed -n '2,8p' "$0"; exit 2 ;;
esac
