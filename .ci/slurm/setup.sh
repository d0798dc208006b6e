#!/usr/bin/env bash
# A real single-node Slurm on localhost for tests/test_slurm.py (docs/design.rst, "Slurm").
#
# Debian bookworm: installs slurmctld, slurmd, slurm-client and munge (when missing),
# writes /etc/slurm/slurm.conf for this host (NodeName = `hostname -s`, CPUs = nproc,
# RealMemory = MemTotal minus a margin, partition "debug"), then starts munged (as the
# munge user), slurmctld and slurmd, and waits until `sinfo` shows the node idle.
# Everything listens on 127.0.0.1 only.
#
# Idempotent: a second run with the daemons up and the same configuration does nothing
# but check the node; a changed configuration restarts the daemons this script started
# (found by their pid files). Must run as root (CI does).
#
#   sudo bash .ci/slurm/setup.sh            # then: sinfo; sbatch ...; pytest -m slurm
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
WAIT_S="${SLURM_SETUP_WAIT_S:-60}"
MEM_MARGIN_MB=1024

die() {
    echo "slurm setup: error: $*" >&2
    exit 1
}
say() { echo "slurm setup: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and starts \
slurmctld/slurmd/munged); CI runs as root. Without Slurm, tests/test_slurm.py skips."
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script installs \
Debian's slurm-wlm (bookworm); on other systems install Slurm yourself."

t0=$SECONDS

# --- packages ---------------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
        || ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
for exe in slurmctld slurmd sbatch sinfo munged; do
    command -v "$exe" >/dev/null 2>&1 || die "$exe missing after installing the packages"
done

# --- slurm.conf for this host ---------------------------------------------------------
# slurmd looks itself up by its short host name.
HOST="$(hostname -s)"
# nproc honours OMP_NUM_THREADS/OMP_THREAD_LIMIT; slurmd counts the online CPUs.
CPUS="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - MEM_MARGIN_MB ))
[ "$MEM_MB" -ge 1024 ] || die "too little memory for a test node (${MEM_MB} MB)"

new_conf="$(cat <<EOF
# Written by .ci/slurm/setup.sh: single-node Slurm on localhost for the tests.
ClusterName=localtest
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SlurmctldPort=6817
SlurmdPort=6818
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
)"

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    conf_changed=1
    say "wrote $CONF (NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB)"
fi

# pid of a live daemon named $2 recorded in pid file $1, or nothing.
live_pid() {
    local pid
    [ -f "$1" ] || return 0
    pid="$(tr -dc 0-9 <"$1")"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] \
        && echo "$pid"
    return 0
}

# Stop the daemon recorded in a pid file (one this script started) and wait for it.
stop_daemon() {
    local pid
    pid="$(live_pid "$1" "$2")"
    [ -n "$pid" ] || return 0
    say "stopping $2 (pid $pid) for the new configuration"
    kill "$pid"
    for _ in $(seq 50); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
    die "$2 (pid $pid) did not stop"
}

tails() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        [ -f "$f" ] && { echo "--- tail $f"; tail -n 25 "$f"; }
    done
    return 0
}

# --- munge ----------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    # --force: a munged ended without cleanup (CI ends every process of a session)
    # leaves its socket behind.
    su -s /bin/sh munge -c "/usr/sbin/munged --force" \
        || { tails; die "munged failed to start"; }
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || { tails; die "munge does not answer"; }
fi

# --- slurmctld and slurmd -------------------------------------------------------------
if [ "$conf_changed" = 1 ]; then
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi
if [ -z "$(live_pid "$CTLD_PID" slurmctld)" ]; then
    say "starting slurmctld"
    # -c: start from a clean state; jobs of an earlier run (whose processes are gone)
    # would otherwise hold the node while slurmctld cleans them up.
    slurmctld -c || { tails; die "slurmctld failed to start"; }
fi
if [ -z "$(live_pid "$SLURMD_PID" slurmd)" ]; then
    say "starting slurmd"
    slurmd || { tails; die "slurmd failed to start"; }
fi

# --- wait for the node ----------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
resumed=0
state=""
while :; do
    state="$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle | mix | alloc) break ;;  # usable (mix/alloc: a job already runs on it)
        down* | drain* | drng* | inval* | fail*)
            if [ "$resumed" = 0 ]; then
                resumed=1
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            fi
            ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "--- sinfo"; sinfo 2>&1 || true
        echo "--- scontrol show node"; scontrol show node "$HOST" 2>&1 || true
        tails
        die "node $HOST not idle after ${WAIT_S}s (state: '${state:-no answer}')"
    fi
    sleep 0.5
done
say "node $HOST $state (${CPUS} CPUs, ${MEM_MB} MB), partition debug; ready in \
$((SECONDS - t0))s"
sinfo
