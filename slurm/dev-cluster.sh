#!/usr/bin/env bash
# A real single-node SLURM cluster for development and tests: slurm/dev-cluster.sh start|stop|status
#
# Debian 12 packages (Slurm 22.05, munge, MariaDB) run as root without systemd: munged, mariadbd,
# slurmdbd (accounting: submitit needs sacct), slurmctld and slurmd, every state, spool, log and
# pid file under one private folder (FPTBENCH_SLURM_DIR, default /tmp/fptbench-slurm) that `start`
# wipes. One partition `dev` (the default) holds this machine's node with 2 fake GPUs (gres on
# /dev/null-like devices: scheduling is tested, not devices). Clients (sinfo, sbatch, submitit)
# find it through /etc/slurm/slurm.conf, which `start` writes and `stop` removes (only ours).
# Recipe and traps: see slurm/README.md. Not for production: credentials expire after 10 s
# [ours: fast requeue] and the database password lives in the state folder.
set -euo pipefail

STATE="${FPTBENCH_SLURM_DIR:-/tmp/fptbench-slurm}"
PARTITION=dev
CLUSTER=fptbench
DB_PORT="${FPTBENCH_SLURM_DB_PORT:-3399}"   # private MariaDB, 127.0.0.1 only
CTLD_PORT=6817 SLURMD_PORT=6818 DBD_PORT=6819  # SLURM's defaults
START_TIMEOUT_S="${FPTBENCH_SLURM_TIMEOUT_S:-60}"
# MaxArraySize: a job array holds at most this many tasks (SLURM's default, 1001). A small one
# lets tests see a sweep split into several arrays; `max-array-size N` changes it while up.
MAX_ARRAY_SIZE="${FPTBENCH_SLURM_MAX_ARRAY_SIZE:-1001}"
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server-core mariadb-client-core)
CLIENT_CONF=/etc/slurm/slurm.conf
MARKER="# written by fptbench slurm/dev-cluster.sh"
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)  # stop order; start is the reverse
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

DIED=0  # set once a one-line error was printed; the EXIT trap reports any other failure
die() { echo "dev-cluster: error: $*" >&2; DIED=1; exit 1; }
# die_log LOG MESSAGE: the error, then the last lines of the log that says why.
die_log() {
    local log=$1; shift
    echo "dev-cluster: error: $*" >&2
    if [[ -s $log ]]; then echo "--- last lines of $log:" >&2; tail -n 15 "$log" >&2; fi
    DIED=1; exit 1
}
STARTING=0  # set while `start` brings daemons up: a failed start stops what it started
on_exit() {
    local rc=$?
    ((rc == 0 || DIED)) || echo "dev-cluster: error: unexpected failure (exit $rc); logs in $STATE/log" >&2
    if ((rc != 0 && STARTING)); then STARTING=0; stop_daemons || true; fi
}
trap on_exit EXIT

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# pid_alive NAME: the pid in NAME's pid file runs NAME (a zombie or a reused pid counts as gone).
pid_alive() {
    local pid
    pid=$(cat "$STATE/run/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    [[ $(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for WHAT LOG CMD...: run CMD every 0.2 s until it succeeds; die with LOG's tail on timeout.
wait_for() {
    local what=$1 log=$2; shift 2
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die_log "$log" "$what not ready after ${START_TIMEOUT_S} s"
        sleep 0.2
    done
}

node_state() { SLURM_CONF="$STATE/etc/slurm.conf" timeout 10 sinfo -h -p "$PARTITION" -o %T 2>/dev/null || true; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

healthy() {
    local d
    for d in "${DAEMONS[@]}"; do pid_alive "$d" || return 1; done
    node_ready
}

need_root() { [[ $EUID -eq 0 ]] || die "must run as root (it installs packages and runs the SLURM daemons); without root the SLURM tests skip"; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null \
        || die "SLURM packages missing (${missing[*]}) and this is not a Debian machine with apt-get; install them by hand"
    echo "dev-cluster: installing ${missing[*]}"
    # The packages' init scripts must start nothing behind our back: policy-rc.d exit 101.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local log=/tmp/fptbench-slurm-apt.log rc=0
    {
        apt-cache show slurmctld >/dev/null 2>&1 || apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } >"$log" 2>&1 || rc=$?
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((rc == 0)) || die_log "$log" "apt-get install failed (exit $rc)"
}

# stop_daemons: scancel what runs, TERM every daemon by its pid file, wait until all are gone.
stop_daemons() {
    local d
    if pid_alive slurmctld; then
        local jobs
        jobs=$(SLURM_CONF="$STATE/etc/slurm.conf" timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            SLURM_CONF="$STATE/etc/slurm.conf" timeout 10 scancel $jobs 2>/dev/null || true
            local until=$((SECONDS + 10))
            while ((SECONDS < until)) && [[ -n $(SLURM_CONF="$STATE/etc/slurm.conf" timeout 5 squeue -h -o %A 2>/dev/null) ]]; do
                sleep 0.5
            done
        fi
    fi
    for d in "${DAEMONS[@]}"; do
        pid_alive "$d" && { kill -TERM "$(cat "$STATE/run/$d.pid")" 2>/dev/null || true; }
    done
    # kill -0 succeeds on a zombie (here a stopped daemon lingers as one for ~2 s): pid_alive.
    local deadline=$((SECONDS + 20)) left
    while :; do
        left=()
        for d in "${DAEMONS[@]}"; do pid_alive "$d" && left+=("$d"); done
        ((${#left[@]})) || break
        if ((SECONDS >= deadline)); then
            for d in "${left[@]}"; do kill -KILL "$(cat "$STATE/run/$d.pid")" 2>/dev/null || true; done
            sleep 0.5
            for d in "${left[@]}"; do pid_alive "$d" && die "$d (pid $(cat "$STATE/run/$d.pid")) survives SIGKILL"; done
            echo "dev-cluster: warning: ${left[*]} needed SIGKILL" >&2
            break
        fi
        sleep 0.2
    done
    if [[ -f $CLIENT_CONF ]] && grep -qF "$MARKER" "$CLIENT_CONF"; then rm -f "$CLIENT_CONF"; fi
}

# check_state_dir: refuse a relative path, / or a folder that is not ours (start wipes it).
check_state_dir() {
    [[ $STATE == /* && $STATE != / ]] || die "FPTBENCH_SLURM_DIR must be an absolute path other than /, got '$STATE'"
    if [[ -d $STATE && -n $(ls -A "$STATE") && ! -f $STATE/.fptbench-slurm ]]; then
        die "$STATE exists and is not a dev-cluster state folder (no .fptbench-slurm); choose another FPTBENCH_SLURM_DIR"
    fi
}

# fresh_state: wipe and recreate the state folder (checked by check_state_dir).
fresh_state() {
    rm -rf "$STATE"
    mkdir -p "$STATE"/{etc,run,log,ctld,spool,dev,munge,mysql}
    chmod 755 "$STATE"
    touch "$STATE/.fptbench-slurm"
    chown munge:munge "$STATE/munge"
    chmod 755 "$STATE/munge"
}

write_configs() {
    local node_line host cpus mem pass
    node_line=$(slurmd -C | head -n 1)          # NodeName=H CPUs=2 Boards=1 ... RealMemory=M
    host=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node_line")
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
    [[ -n $host && -n $cpus && -n $mem ]] || die "cannot parse \`slurmd -C\`: $node_line"
    echo "$host" >"$STATE/run/host"
    pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    # [ours] job ids start from the clock (10 per second, wrapping after ~69 days), not from 1:
    # a reused submitit folder then cannot return a wiped cluster's result for the same id.
    local first_job_id=$(( ($(date +%s) % 6000000) * 10 + 1 ))

    cat >"$STATE/etc/slurm.conf" <<EOF
$MARKER; state in $STATE
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start 11 s after it stopped (default 121 s).
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=5
ReturnToService=2
FirstJobId=$first_job_id
MaxArraySize=$MAX_ARRAY_SIZE
MailProg=/bin/true
MpiDefault=none
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With slurmdbd, the "password" is the munge socket that clients use to talk to it.
AccountingStoragePass=$STATE/munge/munge.socket
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # Fake GPUs: character devices (a count without files, or regular files, drains the node).
    local i
    for i in 0 1; do mknod "$STATE/dev/gpu$i" c 1 3; done
    cat >"$STATE/etc/gres.conf" <<EOF
$MARKER
AutoDetect=off
NodeName=$host Name=gpu File=$STATE/dev/gpu[0-1]
EOF
    (
        umask 077   # slurmdbd refuses a readable slurmdbd.conf (it holds the password)
        cat >"$STATE/etc/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
DbdAddr=127.0.0.1
DbdHost=$host
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
    echo "$pass" >"$STATE/run/db-pass"
    chmod 600 "$STATE/run/db-pass"
}

check_client_conf() {
    if [[ -e $CLIENT_CONF ]] && ! grep -qF "$MARKER" "$CLIENT_CONF"; then
        die "$CLIENT_CONF exists and was not written by dev-cluster.sh (a real cluster's?); move it away first"
    fi
}

install_client_conf() {
    mkdir -p "$(dirname "$CLIENT_CONF")"
    cp "$STATE/etc/slurm.conf" "$CLIENT_CONF.tmp" && mv "$CLIENT_CONF.tmp" "$CLIENT_CONF"
}

start_munge() {
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key"
        else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
        chown munge:munge "$key" && chmod 400 "$key"
    fi
    runuser -u munge -- munged --socket="$STATE/munge/munge.socket" --key-file="$key" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed" </dev/null >>"$STATE/log/munged.out" 2>&1 \
        || die_log "$STATE/munge/munged.log" "munged failed to start"
    ln -sf "$STATE/munge/munged.pid" "$STATE/run/munged.pid"
    wait_for munged "$STATE/munge/munged.log" pid_alive munged
}

start_mariadb() {
    local log=$STATE/log/mariadb.log sock=$STATE/run/mariadb.sock
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" --skip-test-db \
        --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
        || die_log "$STATE/log/mariadb-install.log" "mariadb-install-db failed"
    setsid mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --socket="$sock" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$STATE/run/mariadbd.pid" --log-error="$log" \
        --innodb-buffer-pool-size=64M </dev/null >>"$log" 2>&1 &
    echo $! >"$STATE/run/mariadbd.pid"   # setsid execs in place: the same pid mariadbd writes later
    wait_for MariaDB "$log" mariadb --no-defaults --socket="$sock" -u root -e "SELECT 1"
    mariadb --no-defaults --socket="$sock" -u root >>"$log" 2>&1 <<EOF || die_log "$log" "cannot create the slurm database user"
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$STATE/run/db-pass")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm() {
    export SLURM_CONF=$STATE/etc/slurm.conf    # daemons read slurmdbd.conf and gres.conf beside it
    slurmdbd </dev/null >>"$STATE/log/slurmdbd.out" 2>&1 || die_log "$STATE/log/slurmdbd.log" "slurmdbd failed to start"
    wait_for slurmdbd "$STATE/log/slurmdbd.log" sacctmgr -n show cluster
    sacctmgr -i add cluster "$CLUSTER" >>"$STATE/log/slurmdbd.out" 2>&1 \
        || die_log "$STATE/log/slurmdbd.out" "sacctmgr add cluster failed"
    slurmctld </dev/null >>"$STATE/log/slurmctld.out" 2>&1 || die_log "$STATE/log/slurmctld.log" "slurmctld failed to start"
    wait_for slurmctld "$STATE/log/slurmctld.log" scontrol ping
    slurmd </dev/null >>"$STATE/log/slurmd.out" 2>&1 || die_log "$STATE/log/slurmd.log" "slurmd failed to start"
    wait_for "node $(cat "$STATE/run/host") (idle in sinfo)" "$STATE/log/slurmd.log" node_ready
    local d
    for d in slurmdbd slurmctld slurmd; do pid_alive "$d" || die_log "$STATE/log/$d.log" "$d exited"; done
}

cmd_start() {
    need_root
    check_state_dir
    check_client_conf
    local t0; t0=$(now)
    if [[ -f $STATE/.fptbench-slurm ]] && healthy; then
        echo "dev-cluster: already running (partition $PARTITION, node $(cat "$STATE/run/host") $(node_state)); state in $STATE"
        return 0
    fi
    install_packages
    [[ -f $STATE/.fptbench-slurm ]] && stop_daemons
    local p
    for p in "$CTLD_PORT" "$SLURMD_PORT" "$DBD_PORT" "$DB_PORT"; do
        port_open "$p" && die "port $p on 127.0.0.1 is in use (another SLURM or MariaDB?); stop it first"
    done
    fresh_state
    STARTING=1
    write_configs
    install_client_conf
    start_munge
    start_mariadb
    start_slurm
    STARTING=0
    echo "dev-cluster: up in $(elapsed "$t0") s: partition $PARTITION, node $(cat "$STATE/run/host") $(node_state), gpu:2 (fake); logs in $STATE/log"
}

cmd_stop() {
    need_root
    local t0; t0=$(now)
    if [[ ! -f $STATE/.fptbench-slurm ]]; then echo "dev-cluster: not running (no state in $STATE)"; return 0; fi
    stop_daemons
    echo "dev-cluster: stopped in $(elapsed "$t0") s"
}

cmd_status() {
    local d up=() down=()
    for d in "${DAEMONS[@]}"; do
        if pid_alive "$d"; then up+=("$d"); else down+=("$d"); fi
    done
    if ((${#down[@]} == 0)) && node_ready; then
        echo "dev-cluster: up: partition $PARTITION, node $(cat "$STATE/run/host") $(node_state); state in $STATE"
    elif ((${#up[@]} == 0)); then
        echo "dev-cluster: down"; DIED=1; exit 3
    else
        echo "dev-cluster: unhealthy: running ${up[*]:-nothing}; not running ${down[*]:-nothing}; node '$(node_state)'; run start again"
        DIED=1; exit 3
    fi
}

# max-array-size N: set MaxArraySize on the running cluster (slurm.conf, then slurmctld restarted
# on its saved state). `scontrol reconfigure` alone lowers the limit but does not raise it again:
# seen with Slurm 22.05 here, where after 2 -> 1001 `scontrol show config` said 1001 and sbatch
# still refused an array of 3 ("Invalid job array specification").
cmd_max_array_size() {
    need_root
    local n=${1:-}
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "max-array-size: expected a positive integer, got '${n}'"
    pid_alive slurmctld || die "max-array-size: the cluster is not up (start it first)"
    sed -i "s/^MaxArraySize=.*/MaxArraySize=$n/" "$STATE/etc/slurm.conf"
    cp "$STATE/etc/slurm.conf" "$CLIENT_CONF.tmp" && mv "$CLIENT_CONF.tmp" "$CLIENT_CONF"
    export SLURM_CONF=$STATE/etc/slurm.conf
    kill -TERM "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while pid_alive slurmctld; do
        ((SECONDS < deadline)) || die "max-array-size: slurmctld did not stop within 20 s"
        sleep 0.2
    done
    slurmctld </dev/null >>"$STATE/log/slurmctld.out" 2>&1 || die_log "$STATE/log/slurmctld.log" "slurmctld failed to restart"
    wait_for slurmctld "$STATE/log/slurmctld.log" scontrol ping
    wait_for "node $(cat "$STATE/run/host") (idle in sinfo)" "$STATE/log/slurmd.log" node_ready
    local now
    now=$(SLURM_CONF="$STATE/etc/slurm.conf" timeout 10 scontrol show config | awk '$1 == "MaxArraySize" { print $3 }')
    [[ $now == "$n" ]] || die "max-array-size: slurmctld reports MaxArraySize=$now after its restart, not $n"
    echo "dev-cluster: MaxArraySize=$n"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    max-array-size) cmd_max_array_size "${2:-}" ;;
    *) echo "usage: $0 start|stop|status|max-array-size N   (state in \$FPTBENCH_SLURM_DIR, default /tmp/fptbench-slurm; FPTBENCH_SLURM_MAX_ARRAY_SIZE at start)" >&2; DIED=1; exit 2 ;;
esac
