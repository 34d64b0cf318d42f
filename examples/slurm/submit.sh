#!/usr/bin/env bash
# Run the benchmarks as N Slurm array tasks and merge them when all succeeded:
#   examples/slurm/submit.sh N [pytest arguments...]        (default: 2 shards, benchmarks/)
# Run it from the project's root, in the environment the jobs should use (sbatch exports it to the jobs).
# Prints the array job id and the merge job id; with LLMEFF_SLURM_WAIT=1 waits for the merge job and
# returns its exit status. The merged run is .llmeff/shards/<array job id>/merged.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:-2}
shift || true
array=$(sbatch --parsable --array=0-$((shards - 1)) "$here/shards.sbatch" "$@")
array=${array%%;*}
echo "array job $array: $shards shard(s)"
wait_flag=()
[ "${LLMEFF_SLURM_WAIT:-0}" = 1 ] && wait_flag=(--wait)
merge=$(sbatch --parsable "${wait_flag[@]}" --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
        "$here/merge.sbatch" "$array")
echo "merge job ${merge%%;*} (after array job $array succeeds)"
