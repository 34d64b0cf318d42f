#!/usr/bin/env bash
# The test suite under load (issue 20): N busy processes (`python -c "while True: pass"`, default 4) share the
# machine's cores while the suite runs K times (default 3); prints pass/fail and wall time per run, then a total.
#
#   bash benchmarks/busy_suite.sh                         # 4 busy processes, the whole suite (tests/) 3 times
#   bash benchmarks/busy_suite.sh -n 4 -k 1 tests/test_labels.py tests/test_ab.py   # chosen files, once
#
# Anything after the options goes to pytest (default: tests/). The busy processes are stopped by their process
# ids when the script exits, however it exits. Exit status: 0 when every run passed, else 1.
set -uo pipefail
cd "$(dirname "$0")/.."

busy=4
runs=3
while getopts "n:k:h" opt; do
  case "$opt" in
    n) busy="$OPTARG" ;;
    k) runs="$OPTARG" ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -gt 0 ] || set -- tests/
python=${PYTHON:-python}

pids=()
stop_busy() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}
trap stop_busy EXIT
trap 'exit 130' INT TERM

for _ in $(seq "$busy"); do
  "$python" -c "while True: pass" &
  pids+=("$!")
done
echo "busy_suite: $busy busy processes (pids ${pids[*]}) on $(nproc) cores; $runs run(s) of: pytest $*"

failed=0
logdir=$(mktemp -d)
for run in $(seq "$runs"); do
  start=$SECONDS
  "$python" -m pytest -p no:cacheprovider -q "$@" >"$logdir/run$run.log" 2>&1
  rc=$?
  wall=$((SECONDS - start))
  summary=$(tail -n 1 "$logdir/run$run.log")
  if [ "$rc" -eq 0 ]; then verdict=PASS; else verdict="FAIL (exit $rc)"; failed=$((failed + 1)); fi
  echo "run $run/$runs: $verdict in ${wall} s: $summary"
  [ "$rc" -eq 0 ] || grep -E "^(FAILED|ERROR) " "$logdir/run$run.log" | sed 's/^/    /'
done
echo "busy_suite: $((runs - failed))/$runs runs passed with $busy busy processes; logs in $logdir"
[ "$failed" -eq 0 ]
