#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for the SLURM test (tests/test_slurm.py) in CI and
# on a developer's machine. Debian's slurmctld + slurmd + munge, no accounting, and the node
# declared like a GPU node (32 CPUs, 256 GB, 4 GPUs as GRES backed by /dev/null, /dev/zero,
# /dev/full and /dev/random), so workflow/profiles/slurm is used unchanged. Nothing is bound: no cgroups,
# no CPU or memory enforcement, the "GPUs" are names only (torch sees no CUDA and runs on
# the CPU).
#
# Usage (as root):
#   .ci/slurm-cluster.sh install   apt-get install slurmctld slurmd slurm-client munge (if missing)
#   .ci/slurm-cluster.sh start     write /etc/slurm/{slurm,gres}.conf, start munged, slurmctld,
#                                  slurmd; wait until the node is idle
#   .ci/slurm-cluster.sh stop      stop the daemons this script started (by their PIDs) and
#                                  remove the config files it wrote
#   .ci/slurm-cluster.sh status    sinfo / squeue
#
# State, logs and PID files live in $NETPERTURB_SLURM_DIR (default /tmp/netperturb-slurm).
# The config goes to /etc/slurm/slurm.conf, not to a $SLURM_CONF elsewhere: the executor
# plugin's nested `srun` inside each job drops SLURM_CONF from the environment.
set -euo pipefail

DIR=${NETPERTURB_SLURM_DIR:-/tmp/netperturb-slurm}
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
MARK="# written by netperturb .ci/slurm-cluster.sh"
NODE=$(hostname -s)

die() { echo "slurm-cluster: $*" >&2; exit 1; }
say() { echo "slurm-cluster: $*"; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (starts daemons, writes /etc/slurm)"; }

install_packages() {
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        say "slurm and munge already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
}

# Start "$2..." in the background in its own session, output to $DIR/$1.out, PID to $DIR/$1.pid.
spawn() {
    local name=$1
    shift
    setsid "$@" >"$DIR/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/$name.pid"
}

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

write_config() {
    for f in "$CONF" "$GRES"; do
        if [ -e "$f" ] && ! grep -qF "$MARK" "$f"; then
            die "$f exists and was not written by this script; refusing to overwrite it"
        fi
    done
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
$MARK ($(date -u +%FT%TZ)); removed by '$0 stop'.
ClusterName=netperturb
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.daemon.pid
SlurmdPidFile=$DIR/slurmd.daemon.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers), no accounting (no slurmdbd): jobs are watched with squeue, which
# needs finished jobs to stay known for a while (the plugin wants MinJobAge >= 120 s)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MinJobAge=600
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# the node is declared bigger than the machine (like a GPU node of a real cluster), and
# config_overrides keeps slurmd from draining it for having fewer CPUs/memory than declared
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=32 RealMemory=256000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$GRES" <<EOF
$MARK; fake GPUs: device files that exist everywhere
NodeName=$NODE Name=gpu File=/dev/null
NodeName=$NODE Name=gpu File=/dev/zero
NodeName=$NODE Name=gpu File=/dev/full
NodeName=$NODE Name=gpu File=/dev/random
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running; using it (not ours to stop)"
        return
    fi
    # munged refuses a socket folder that is not 0711 and owned by its user
    install -d -m 0711 -o munge -g munge /run/munge
    install -d -m 0700 -o munge -g munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        setpriv --reuid=munge --regid=munge --init-groups mungekey --create
    fi
    spawn munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.2
    done
    start_failed "munged did not come up"
}

# Show the daemons' last log lines, stop what was started, fail.
start_failed() {
    for f in munged.out slurmctld.log slurmd.log; do
        [ -f "$DIR/$f" ] && { echo "--- $DIR/$f"; tail -n 15 "$DIR/$f"; } >&2
    done
    stop
    die "$1"
}

start() {
    need_root
    command -v slurmctld >/dev/null || die "slurm is not installed: run '$0 install' first"
    mkdir -p "$DIR"
    alive slurmctld && die "already running (PID $(cat "$DIR/slurmctld.pid")); '$0 stop' first"
    write_config
    start_munge
    spawn slurmctld /usr/sbin/slurmctld -D -c
    for _ in $(seq 50); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.2
    done
    spawn slurmd /usr/sbin/slurmd -D
    local state=""
    for _ in $(seq 120); do
        alive slurmctld || start_failed "slurmctld exited"
        alive slurmd || start_failed "slurmd exited"
        state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
        case $state in
            idle | mixed) break ;;
            down* | drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    case $state in
        idle | mixed) ;;
        *) start_failed "node $NODE is '$state', not idle" ;;
    esac
    say "up: node $NODE idle; logs and PIDs in $DIR"
    sinfo -N -o "%N %T %c %m %G"
}

stop_one() {
    local name=$1 pid
    [ -f "$DIR/$name.pid" ] || return 0
    pid=$(cat "$DIR/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        say "stopped $name (PID $pid)"
    fi
    rm -f "$DIR/$name.pid"
}

stop() {
    # slurmd first: it also ends the job steps it runs
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    for f in "$CONF" "$GRES"; do
        if [ -e "$f" ] && grep -qF "$MARK" "$f"; then rm -f "$f"; fi
    done
}

status() {
    sinfo -N -o "%N %T %c %m %G"
    squeue
}

case ${1:-} in
    install) install_packages ;;
    start | stop | status) "$1" ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
