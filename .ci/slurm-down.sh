#!/usr/bin/env bash
# Stop the single-node Slurm of .ci/slurm-up.sh: each daemon by the process id it recorded (never by name).
STATE=${LLMEFF_SLURM_DIR:-/tmp/llmeff-slurm}
for daemon in slurmd slurmctld munged; do
  pidfile="$STATE/$daemon.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
exit 0
