#!/usr/bin/env bash
# cluster.sh — install, bring up and tear down a real, throw-away Slurm cluster
# on this one machine, for cohort's integration tests.
#
# Everything a cluster owns (slurm.conf, state, spool, logs, pids) lives under
# one directory, so several clusters can run side by side (distinct --dir and
# --port-base) and `down` can remove exactly what `up` started, by PID.
#
# See `cluster.sh --help` for usage.
set -euo pipefail

# iproute2 provides `ss`, used to refuse ports another cluster already listens on.
readonly PACKAGES=(munge slurmctld slurmd slurm-client openmpi-bin libopenmpi-dev libpmix-dev libclang-dev iproute2)
readonly DEFAULT_PORT_BASE=16817
readonly DEFAULT_CPUS=4
readonly UP_TIMEOUT_S=30
# Shared (cross-cluster) bookkeeping for the munge daemon: munged is one per
# machine, so if this script starts it, it must only stop it once no cluster
# started by this script still uses it.
readonly MUNGE_STATE=/run/cohort-slurm
readonly MUNGE_SOCKET_DIR=/run/munge

usage() {
  cat <<'EOF'
usage: cluster.sh COMMAND [options]

commands:
  install                      apt-get install munge, Slurm (slurmctld, slurmd,
                               client) and OpenMPI/PMIx, unless already installed;
                               make sure /etc/munge/munge.key exists.
  up --dir DIR [--nodes N] [--port-base P] [--cpus C]
                               start a cluster whose config/state/logs/pids live
                               under DIR; wait until every node is idle; print
                               `SLURM_CONF=DIR/slurm.conf` (also written to DIR/env).
                               --nodes 0 (default): one slurmd for `hostname -s`.
                               --nodes N>=1: emulated node[1-N], each slurmd in its
                               own UTS namespace (hostname nodeX) and mount
                               namespace (DIR/hosts over /etc/hosts, so nodeX
                               resolves to 127.0.0.1), all on 127.0.0.1.
                               --port-base P (default 16817): SlurmctldPort=P,
                               slurmd ports P+1..P+max(N,1).
                               --cpus C (default 4): CPUs advertised per node.
                               On failure: prints the log tails, stops what it
                               started, exits 1.
  down --dir DIR               stop exactly the processes `up` recorded in DIR/pids
                               (TERM, then KILL after ~5 s). Idempotent.
  status --dir DIR             sinfo for the cluster in DIR.
  hostnames-conf --dir DIR     write a minimal DIR/slurm.conf, good enough for
                               `scontrol show hostnames|hostlist` without any
                               daemon; print `SLURM_CONF=DIR/slurm.conf`.
  -h, --help                   this text.

typical test use (daemons keep no fd on our stdout, so $(...) returns):
  export "$(tests/slurm/cluster.sh up --dir /tmp/c1)"     # SLURM_CONF=...
  sbatch ...; scontrol show job ID ...
  tests/slurm/cluster.sh down --dir /tmp/c1

notes: runs as root; no accounting (sacct does not work); sbatch'd jobs are
scheduled on slurmctld's 1 s background tick, so expect ~0.4-2 s from sbatch
to COMPLETED for a trivial job.
EOF
}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- install ---

all_installed() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || return 1
  done
}

ensure_munge_key() {
  # Debian's munge postinst normally creates the key; make sure anyway, since
  # munged refuses to start without it.
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
}

cmd_install() {
  local t0
  t0=$(now_ms)
  if all_installed; then
    log "packages already installed; skipping apt"
  else
    export DEBIAN_FRONTEND=noninteractive
    # Package lists may be stale or missing: retry once after an update.
    if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}"; then
      apt-get update
      apt-get install -y --no-install-recommends "${PACKAGES[@]}"
    fi
  fi
  ensure_munge_key
  log "install took $(( $(now_ms) - t0 )) ms"
}

# ------------------------------------------------------------------ munge ---

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# munged is one per machine while clusters come and go concurrently (the tests bring
# several up in parallel): every decision to start or stop it is made under this lock,
# or two `up`s race to start it and the loser's munged fails to bind its socket.
# The lock's descriptor must not leak into munged, which would hold it forever.
MUNGE_LOCK_FD=
with_munge_lock() {
  local rc=0
  mkdir -p "$MUNGE_STATE/users"
  exec {MUNGE_LOCK_FD}>"$MUNGE_STATE/lock"
  flock -w 30 "$MUNGE_LOCK_FD" || die "timed out waiting for $MUNGE_STATE/lock"
  "$@" || rc=$?
  exec {MUNGE_LOCK_FD}>&-
  return "$rc"
}

ensure_munge() { with_munge_lock ensure_munge_locked "$@"; }
release_munge() { with_munge_lock release_munge_locked "$@"; }

# Start munged if it is not answering; remember that we did (machine-wide),
# and register DIR as a user so `down` knows when the last user is gone.
ensure_munge_locked() {
  local dir=$1 i
  mkdir -p "$MUNGE_STATE/users"
  # The registry entry is the cluster dir with '/' mapped to '%'.
  printf '%s\n' "$dir" >"$MUNGE_STATE/users/${dir//\//%}"
  if munge_works; then
    return 0
  fi
  command -v munged >/dev/null || [[ -x /usr/sbin/munged ]] || die "munged not installed; run: $0 install"
  ensure_munge_key
  install -d -o munge -g munge -m 0755 "$MUNGE_SOCKET_DIR"
  log "starting munged"
  # munged daemonizes itself and writes its pid file under /run/munge.
  runuser -u munge -- /usr/sbin/munged {MUNGE_LOCK_FD}>&-
  for ((i = 0; i < 50; i++)); do
    munge_works && break
    sleep 0.1
  done
  munge_works || die "munged did not come up (see /var/log/munge/munged.log)"
  if [[ -s $MUNGE_SOCKET_DIR/munged.pid ]]; then
    cp "$MUNGE_SOCKET_DIR/munged.pid" "$MUNGE_STATE/munged.pid"
  else
    log "warning: munged started but wrote no pid file; it will not be stopped by down"
  fi
}

release_munge_locked() {
  local dir=$1 pid
  rm -f "$MUNGE_STATE/users/${dir//\//%}"
  [[ -s $MUNGE_STATE/munged.pid ]] || return 0
  # Another cluster started by this script still needs it.
  if compgen -G "$MUNGE_STATE/users/*" >/dev/null; then
    return 0
  fi
  pid=$(<"$MUNGE_STATE/munged.pid")
  # Only signal the PID if it is still the munged we started (PIDs get reused).
  if [[ $(readlink "/proc/$pid/exe" 2>/dev/null || true) == */munged ]]; then
    log "stopping munged (pid $pid, started by cluster.sh)"
    kill_pids "$pid"
  fi
  rm -f "$MUNGE_STATE/munged.pid"
}

# ---------------------------------------------------------------- helpers ---

# TERM the given PIDs, wait up to ~5 s, then KILL whatever is left.
kill_pids() {
  local pid alive i
  (($# > 0)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive=()
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null && alive+=("$pid")
    done
    ((${#alive[@]} == 0)) && return 0
    sleep 0.1
  done
  log "sending KILL to ${alive[*]}"
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

# Start a daemon in the foreground (-D) in the background of this shell, with
# all of its stdio on a log file: a daemon that inherits our stdout would keep
# `$(cluster.sh up ...)` waiting for EOF forever. setsid puts it in its own
# session so a Ctrl-C aimed at the test does not hit it; since a background
# child of a non-interactive shell is not a process-group leader, setsid does
# not fork, so $! is the daemon's PID.
spawn() {
  local name=$1 out=$2
  shift 2
  setsid "$@" </dev/null >>"$out" 2>&1 &
  printf '%s\n' "$!" >"$DIR/pids/$name.pid"
}

parse_dir_opts() {
  DIR="" NODES=0 PORT_BASE=$DEFAULT_PORT_BASE CPUS=$DEFAULT_CPUS
  while (($# > 0)); do
    case $1 in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
      --port-base) PORT_BASE=${2:?--port-base needs a value}; shift 2 ;;
      --cpus) CPUS=${2:?--cpus needs a value}; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option: $1 (see --help)" ;;
    esac
  done
  [[ -n $DIR ]] || die "--dir DIR is required"
  [[ $NODES =~ ^[0-9]+$ ]] || die "--nodes must be a number"
  [[ $PORT_BASE =~ ^[0-9]+$ ]] || die "--port-base must be a number"
  [[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number"
  # Slurm wants absolute paths in slurm.conf.
  DIR=$(realpath -m -- "$DIR")
}

# ----------------------------------------------------------------- config ---

write_conf() {
  local host=$1 conf=$DIR/slurm.conf mem nodes_line
  # Memory is not a consumable (CR_Core), but advertise the real amount so
  # `--mem` requests up to it are accepted.
  mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
  if ((NODES == 0)); then
    nodes_line="NodeName=$host NodeAddr=127.0.0.1 Port=$((PORT_BASE + 1))"
    NODE_EXPR=$host
  else
    # All emulated nodes share this machine's address; the port range is
    # handed out over the node range in order (node1 -> P+1, node2 -> P+2...).
    nodes_line="NodeName=node[1-$NODES] NodeHostname=$host NodeAddr=127.0.0.1"
    nodes_line+=" Port=[$((PORT_BASE + 1))-$((PORT_BASE + NODES))]"
    NODE_EXPR="node[1-$NODES]"
  fi
  cat >"$conf" <<EOF
# Generated by tests/slurm/cluster.sh — a throw-away test cluster.
ClusterName=cohort
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT_BASE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge

StateSaveLocation=$DIR/state
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmctldDebug=info
# %n = node name, so each emulated slurmd gets its own spool, pid, log, tmp.
SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/run/slurmd.%n.pid
SlurmdLogFile=$DIR/log/slurmd.%n.log
SlurmdDebug=info
TmpFS=$DIR/tmp/%n

# No cgroups in a container/VM sandbox: track processes by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=pmix
LaunchParameters=use_interactive_step

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Schedule at once: no batching delay between submissions, no minimum
# interval between scheduling passes.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=100

# No accounting daemon: sacct does not work on this cluster.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true

# Advertise the CPUs written below rather than the real ones: the test machine
# has few cores but tests want several CPUs per node (and several "nodes").
SlurmdParameters=config_overrides
# A node that was DOWN comes back as soon as its slurmd registers.
ReturnToService=2

# Short timeouts keep start-up, failures and teardown snappy.
MessageTimeout=5
SlurmctldTimeout=10
SlurmdTimeout=10
InactiveLimit=0
KillWait=2
WaitTime=0
MinJobAge=300
TCPTimeout=2
UnkillableStepTimeout=10

$nodes_line CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

# ------------------------------------------------------------------ up/down --

# Prints one line per node: "name state" (state lowercase, flags like '*' kept).
node_states() {
  SLURM_CONF=$DIR/slurm.conf sinfo -h -N -o '%N %T' 2>/dev/null || true
}

all_idle() {
  local states
  states=$(node_states)
  [[ $(printf '%s\n' "$states" | awk '$2 == "idle" { c++ } END { print c + 0 }') -eq $EXPECTED_NODES ]] &&
    [[ $(printf '%s\n' "$states" | grep -c .) -eq $EXPECTED_NODES ]]
}

# The controller answering on our port must be ours, not another cluster's
# that happens to use the same port: compare its StateSaveLocation.
controller_is_ours() {
  SLURM_CONF=$DIR/slurm.conf scontrol show config 2>/dev/null |
    grep -qx "StateSaveLocation *= *$DIR/state"
}

# Fail early, and clearly, when a port we are about to use is taken
# (typically: another cluster with the same --port-base).
check_ports_free() {
  local port last=$((PORT_BASE + EXPECTED_NODES))
  for ((port = PORT_BASE; port <= last; port++)); do
    if [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
      die "TCP port $port is already in use (another cluster? pick another --port-base)"
    fi
  done
}

# Print the tail of each daemon's log to stderr: its log file, or, when that
# is empty (it died before opening it, e.g. on a config error), the captured
# stdout/stderr of the process.
dump_logs() {
  local out logf f
  for out in "$DIR"/log/*.out; do
    [[ -e $out ]] || continue
    logf=${out%.out}.log
    f=$out
    [[ -s $logf ]] && f=$logf
    [[ -s $f ]] || continue
    log "---- tail -n 20 $f"
    tail -n 20 "$f" >&2
  done
}

# Stop what `up` started: cancel jobs, then the recorded PIDs, then munge if
# this script started it and no other cluster of ours still uses it.
teardown() {
  local f pids=() pid i
  if [[ -s $DIR/slurm.conf ]] && compgen -G "$DIR/pids/slurmctld.pid" >/dev/null &&
    kill -0 "$(<"$DIR/pids/slurmctld.pid")" 2>/dev/null && controller_is_ours; then
    # Cancel jobs first so slurmd can end their steps: slurmstepd processes
    # daemonize away from slurmd and have no pid file of ours.
    if SLURM_CONF=$DIR/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null | grep -q .; then
      SLURM_CONF=$DIR/slurm.conf timeout 5 scancel --quiet --user=root 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        SLURM_CONF=$DIR/slurm.conf timeout 2 squeue -h -t R,CG,S -o %i 2>/dev/null | grep -q . || break
        sleep 0.2
      done
    fi
  fi
  if [[ -d $DIR/pids ]]; then
    for f in "$DIR"/pids/*.pid; do
      [[ -e $f ]] || continue
      pid=$(<"$f")
      [[ $pid =~ ^[0-9]+$ ]] && pids+=("$pid")
    done
    kill_pids "${pids[@]}"
    rm -f "$DIR"/pids/*.pid
  fi
  release_munge "$DIR"
  STOPPED=${#pids[@]}
}

up_failed() {
  log "$1"
  dump_logs
  teardown
  die "bring-up failed; stopped what was started (logs kept in $DIR/log)"
}

cmd_up() {
  local t0 host i node conf f deadline
  parse_dir_opts "$@"
  t0=$(now_ms)
  host=$(hostname -s)
  conf=$DIR/slurm.conf
  if compgen -G "$DIR/pids/*.pid" >/dev/null; then
    die "$DIR already has a running cluster (pids/*.pid); run: $0 down --dir $DIR"
  fi
  command -v slurmctld >/dev/null || die "slurmctld not installed; run: $0 install"
  EXPECTED_NODES=$((NODES == 0 ? 1 : NODES))
  check_ports_free

  # A fresh state save location each time: stale job/node state from an
  # earlier run (possibly with another shape) only gets in the way.
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/tmp" "$DIR/log" "$DIR/env"
  mkdir -p "$DIR"/{state,spool,run,tmp,log,pids}
  if ((NODES == 0)); then
    mkdir -p "$DIR/spool/$host" "$DIR/tmp/$host"
  else
    for ((i = 1; i <= NODES; i++)); do
      mkdir -p "$DIR/spool/node$i" "$DIR/tmp/node$i"
    done
  fi
  write_conf "$host"
  if ((NODES > 0)); then
    { cat /etc/hosts; echo "127.0.0.1 $(seq -f 'node%g' -s ' ' 1 "$NODES")"; } >"$DIR/hosts"
  fi

  ensure_munge "$DIR"

  # -D: stay in the foreground so $! is the daemon; -i: ignore saved state.
  spawn slurmctld "$DIR/log/slurmctld.out" slurmctld -D -i -f "$conf"
  if ((NODES == 0)); then
    spawn "slurmd.$host" "$DIR/log/slurmd.$host.out" slurmd -D -f "$conf"
  else
    for ((i = 1; i <= NODES; i++)); do
      node=node$i
      # Each emulated node gets its own UTS namespace with hostname nodeX:
      # tasks then see distinct hostnames, and OpenMPI's shared-memory
      # segment names (which embed the hostname) do not collide between
      # "nodes" that are really one machine. A private mount namespace lets
      # us bind DIR/hosts over /etc/hosts there, so node1..nodeN resolve
      # (to 127.0.0.1) inside the job without editing the real /etc/hosts.
      # `unshare` without --fork and `exec` keep the PID the same all the
      # way down to slurmd.
      # shellcheck disable=SC2016 # $1..$3 are expanded by the inner sh
      spawn "slurmd.$node" "$DIR/log/slurmd.$node.out" \
        unshare --uts --mount -- sh -c \
        'mount --bind "$3" /etc/hosts && hostname "$1" && exec slurmd -D -N "$1" -f "$2"' \
        sh "$node" "$conf" "$DIR/hosts"
    done
  fi

  # Wait (bounded) until every node is idle, polling every 0.2 s.
  deadline=$(($(now_ms) + UP_TIMEOUT_S * 1000))
  while :; do
    # A daemon that died will never make it; report it right away.
    for f in "$DIR"/pids/*.pid; do
      kill -0 "$(<"$f")" 2>/dev/null || up_failed "$(basename "$f" .pid) exited during bring-up"
    done
    all_idle && break
    if (($(now_ms) > deadline)); then
      node_states >&2
      up_failed "nodes not all idle after ${UP_TIMEOUT_S}s (sinfo above)"
    fi
    sleep 0.2
  done
  controller_is_ours || up_failed "the controller on port $PORT_BASE is not this cluster's"

  printf 'SLURM_CONF=%s\n' "$conf" >"$DIR/env"
  log "cluster up in $(($(now_ms) - t0)) ms: $NODE_EXPR (${EXPECTED_NODES} node(s) x $CPUS CPUs), ctld port $PORT_BASE"
  printf 'SLURM_CONF=%s\n' "$conf"
}

cmd_down() {
  parse_dir_opts "$@"
  teardown
  log "down: stopped $STOPPED process(es) from $DIR"
}

cmd_status() {
  parse_dir_opts "$@"
  SLURM_CONF=$DIR/slurm.conf sinfo
}

# scontrol's hostlist commands never talk to the controller, but scontrol
# still reads slurm.conf first and needs a controller name to parse it.
cmd_hostnames_conf() {
  parse_dir_opts "$@"
  mkdir -p "$DIR"
  cat >"$DIR/slurm.conf" <<EOF
# Generated by tests/slurm/cluster.sh hostnames-conf: for
# \`scontrol show hostnames|hostlist\` only; no daemon uses it.
ClusterName=cohort
SlurmctldHost=localhost
EOF
  printf 'SLURM_CONF=%s\n' "$DIR/slurm.conf"
}

main() {
  (($# > 0)) || { usage >&2; exit 2; }
  local cmd=$1
  shift
  case $cmd in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    hostnames-conf) cmd_hostnames_conf "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
