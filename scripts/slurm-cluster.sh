#!/usr/bin/env bash
# Starts, stops and reports a one-node Slurm cluster on this machine, for the
# tests of deploy/slurm (and to try the job scripts without a real cluster).
#
#   scripts/slurm-cluster.sh start  [DIR]   start it (or find it running) and print
#                                           `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-cluster.sh stop   [DIR]   stop the daemons it started
#   scripts/slurm-cluster.sh status [DIR]   exit 0 if it is up and its node idle or busy
#
# DIR (default $EXPLAIND_SLURM_DIR, else /tmp/explaind-slurm) holds everything:
# slurm.conf, a private munge key and socket, the daemons' state, logs and
# PID files. Nothing under /etc is read or changed; the Slurm commands find the
# cluster through SLURM_CONF=DIR/slurm.conf. Ports: $EXPLAIND_SLURM_PORT
# (slurmctld, default 16817) and the one after it (slurmd), away from a system
# Slurm's 6817/6818.
#
# It needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm
# munge). munged runs as the user munge; slurmctld and slurmd as root with
# SlurmUser=root, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
# SelectType=select/cons_tres (CR_CPU) and one node with CPUs=$(nproc): no
# cgroups, no accounting database. Jobs run as the user who submits them.
#
# start is idempotent: daemons already running from DIR are kept; stop ends
# only the processes named by DIR's PID files. Each step that fails says so,
# with the end of the log that explains it, and start exits non-zero.
set -euo pipefail

cmd=${1:-}
dir=${2:-${EXPLAIND_SLURM_DIR:-/tmp/explaind-slurm}}
port=${EXPLAIND_SLURM_PORT:-16817}
prog=$(basename "$0")

die() {
  echo "$prog: $*" >&2
  exit 1
}

# alive PIDFILE: the PID file names a running process.
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# logtail FILE: the end of a daemon's log, indented, for an error message.
logtail() {
  if [ -s "$1" ]; then
    echo "--- last lines of $1:" >&2
    tail -n 15 "$1" | sed 's/^/    /' >&2
  fi
}

# stopdaemon NAME PIDFILE: SIGTERM the process of the PID file and wait for it
# (SIGKILL after 10 s).
stopdaemon() {
  local name=$1 pidfile=$2 pid
  if ! alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$prog: $name (PID $pid) did not stop within 10 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

conf=$dir/slurm.conf
m=$dir/munge
sock=$m/munge.socket

export SLURM_CONF=$conf

# nodestate: the state of the cluster's one node as sinfo reports it ("" if
# slurmctld does not answer).
nodestate() {
  timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n 1 | tr -d '*~#' || true
}

case $cmd in
start) ;;
stop)
  stopdaemon slurmd "$dir/slurmd.pid"
  stopdaemon slurmctld "$dir/slurmctld.pid"
  stopdaemon munged "$m/munged.pid"
  echo "$prog: stopped the cluster of $dir" >&2
  exit 0
  ;;
status)
  for p in "$m/munged.pid" "$dir/slurmctld.pid" "$dir/slurmd.pid"; do
    alive "$p" || die "not running ($p names no running process)"
  done
  st=$(nodestate)
  case $st in
  idle | mixed | allocated | completing) echo "$prog: up; node $st; SLURM_CONF=$conf" >&2 ;;
  *) die "daemons run but the node is ${st:-not reported}" ;;
  esac
  exit 0
  ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
  ;;
esac

# --- start
[ "$(id -u)" = 0 ] || die "needs root: slurmd runs as root to start jobs as their users (run it with sudo)"
missing=()
for b in munged munge unmunge slurmctld slurmd sinfo sbatch; do
  command -v "$b" >/dev/null || missing+=("$b")
done
[ ${#missing[@]} = 0 ] || die "missing ${missing[*]}: install them with apt-get install slurm-wlm munge"
id munge >/dev/null 2>&1 || die "no user munge (Debian's munge package creates it): apt-get install munge"

mkdir -p "$dir" "$dir/state" "$dir/spool" "$m" 2>/dev/null || die "cannot create the cluster's directory $dir"
chmod 0755 "$dir"
# munged wants its directory owned by munge and searchable by all (the
# socket), its key readable by munge alone.
chown munge:munge "$m"
chmod 0755 "$m"

# munge: a private key, socket and daemon, run as the user munge.
if [ ! -s "$m/munge.key" ]; then
  (umask 077 && head -c 1024 /dev/urandom >"$m/munge.key.tmp")
  mv "$m/munge.key.tmp" "$m/munge.key"
fi
chown munge:munge "$m/munge.key"
chmod 0400 "$m/munge.key"
if ! alive "$m/munged.pid"; then
  rm -f "$sock" "$sock.lock"
  runuser -u munge -- munged --socket="$sock" --key-file="$m/munge.key" --pid-file="$m/munged.pid" \
    --log-file="$m/munged.log" --seed-file="$m/munged.seed" ||
    { logtail "$m/munged.log"; die "munged did not start"; }
fi
ok=
for _ in $(seq 50); do
  if munge -n -S "$sock" 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1; then
    ok=1
    break
  fi
  sleep 0.1
done
[ -n "$ok" ] || { logtail "$m/munged.log"; die "munged runs but does not answer on $sock"; }

host=$(hostname -s)
cpus=$(nproc)
cat >"$conf.tmp" <<EOF
# A one-node cluster for explaind's tests; written by scripts/slurm-cluster.sh.
ClusterName=explaind
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
if cmp -s "$conf.tmp" "$conf"; then
  rm "$conf.tmp"
else
  mv "$conf.tmp" "$conf"
  # A running cluster with another configuration (another machine size or
  # port): restart it with this one.
  if alive "$dir/slurmctld.pid" || alive "$dir/slurmd.pid"; then
    echo "$prog: the configuration changed; restarting slurmctld and slurmd" >&2
    stopdaemon slurmd "$dir/slurmd.pid"
    stopdaemon slurmctld "$dir/slurmctld.pid"
  fi
fi

if ! alive "$dir/slurmctld.pid"; then
  slurmctld -f "$conf" || { logtail "$dir/slurmctld.log"; die "slurmctld did not start"; }
fi
if ! alive "$dir/slurmd.pid"; then
  slurmd -f "$conf" || { logtail "$dir/slurmd.log"; die "slurmd did not start"; }
fi

# Up when the node reports idle (or runs jobs); a node left down by an
# earlier stop is resumed.
st=
for _ in $(seq 300); do
  st=$(nodestate)
  case $st in
  idle | mixed | allocated | completing)
    echo "$prog: up: node $host with $cpus CPUs ($st); state and logs in $dir" >&2
    echo "export SLURM_CONF=$conf"
    exit 0
    ;;
  down | drained | draining | fail | failing)
    timeout 5 scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    ;;
  esac
  alive "$dir/slurmctld.pid" || { logtail "$dir/slurmctld.log"; die "slurmctld exited"; }
  alive "$dir/slurmd.pid" || { logtail "$dir/slurmd.log"; die "slurmd exited"; }
  sleep 0.1
done
logtail "$dir/slurmctld.log"
logtail "$dir/slurmd.log"
die "the node is ${st:-not reported by sinfo} after 30 s, not idle"
