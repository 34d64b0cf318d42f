#!/usr/bin/env bash
# Start a single-node Slurm (munge, slurmctld, slurmd) for the Slurm end-to-end test; .ci/slurm-down.sh stops it.
# Debian's packages (slurmctld slurmd slurm-client munge) are installed when missing. Needs root. Idempotent:
# a cluster this script already started is left running. State (config, spool, logs, pids) lives in
# $LLMEFF_SLURM_DIR (default /tmp/llmeff-slurm). Prints the node's state when ready; exit 1 when not ready in 60 s.
set -euo pipefail
STATE=${LLMEFF_SLURM_DIR:-/tmp/llmeff-slurm}
mkdir -p "$STATE"
alive() { [ -s "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null; }
fi
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))

if ! alive munged; then
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F >"$STATE/munged.log" 2>&1 &
  echo $! >"$STATE/munged.pid"
  for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
fi

mkdir -p /etc/slurm "$STATE/spool" "$STATE/ctld"
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=llmeff
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdSpoolDir=$STATE/spool
StateSaveLocation=$STATE/ctld
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
if ! alive slurmctld; then
  slurmctld -D -i >"$STATE/slurmctld.out" 2>&1 &
  echo $! >"$STATE/slurmctld.pid"
fi
if ! alive slurmd; then
  slurmd -D >"$STATE/slurmd.out" 2>&1 &
  echo $! >"$STATE/slurmd.pid"
fi
for _ in $(seq 120); do
  state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
  case "$state" in idle*|mix*|alloc*) echo "slurm: node $host $state"; exit 0 ;; esac
  sleep 0.5
done
echo "slurm: node $host not ready after 60 s (state: ${state:-none}); logs in $STATE" >&2
tail -5 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
exit 1
