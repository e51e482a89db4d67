#!/usr/bin/env bash
# Runs a single-node KRaft Apache Kafka broker (broker + controller in one JVM) for Concord's
# integration tests, from the Apache Kafka jars on Maven Central (fetched by Maven, cached in .kafka/).
#
#   bash scripts/kafka.sh start    fetch jars if needed, format storage once, start, wait until ready
#   bash scripts/kafka.sh stop     stop the broker this script started (SIGTERM, then SIGKILL after a timeout)
#   bash scripts/kafka.sh status   exit 0 when a Kafka broker answers on KAFKA_PORT, 3 when not (nothing there,
#                                  still starting, or a program that is not Kafka holds the port)
#   bash scripts/kafka.sh reset    stop, then delete the broker's data (topics, offsets); jars are kept
#
# Environment (all optional):
#   KAFKA_VERSION        Apache Kafka release to fetch               (default 3.9.1)
#   KAFKA_PORT           client listener port on 127.0.0.1           (default 9092)
#   KAFKA_CONTROLLER_PORT controller listener port on 127.0.0.1      (default 9093)
#   KAFKA_DIR            working directory: jars, data, config, logs (default <repo>/.kafka)
#   KAFKA_HEAP_OPTS      JVM heap                                    (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT  seconds to wait for the broker to be ready  (default 120)
#   KAFKA_SASL_PLAIN     user:password — the client listener then takes SASL/PLAIN only, with that
#                        one user (SASL_PLAINTEXT; for testing that SASL options pass through)
#   KAFKA_TLS_CERT, KAFKA_TLS_KEY
#                        PEM certificate (self-signed, for 127.0.0.1) and its unencrypted PKCS#8 key:
#                        the client listener then speaks TLS only (SSL, or SASL_SSL with KAFKA_SASL_PLAIN)
#   JAVA_HOME            Java 17+ to use                             (default: java on PATH)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

version="${KAFKA_VERSION:-3.9.1}"
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
dir="${KAFKA_DIR:-$repo/.kafka}"
heap="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
timeout="${KAFKA_START_TIMEOUT:-120}"
sasl_plain="${KAFKA_SASL_PLAIN:-}"
tls_cert="${KAFKA_TLS_CERT:-}"
tls_key="${KAFKA_TLS_KEY:-}"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

libs="$dir/libs-$version"
data="$dir/data"
config="$dir/server.properties"
log4j="$dir/log4j.properties"
logfile="$dir/kafka.log"
pidfile="$dir/kafka.pid"
# The client port of the broker the pid file names (another KAFKA_PORT must not pass for it).
portfile="$dir/kafka.port"

say() { printf 'kafka.sh: %s\n' "$*" >&2; }

for p in "$port" "$controller_port"; do
  [[ "$p" =~ ^[0-9]+$ ]] && (( p >= 1 && p <= 65535 )) || { say "KAFKA_PORT and KAFKA_CONTROLLER_PORT must be port numbers, got '$p'"; exit 2; }
done
[[ "$port" != "$controller_port" ]] || { say "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ (both $port)"; exit 2; }

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp, no extra tools).
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when something answers Kafka's protocol on 127.0.0.1:$1: an ApiVersions v0 request whose
# reply echoes its correlation id (any broker answers it, also before SASL authentication). A
# listener that only accepts TCP connections (another program on the port) is not a broker. With
# KAFKA_TLS_* set the listener does not read plaintext: there an open port has to do.
speaks_kafka() {
  if [[ -n "$tls_cert$tls_key" ]]; then port_open "$1"; return; fi
  local reply
  reply="$( (exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf '\x00\x00\x00\x0a\x00\x12\x00\x00Cncd\xff\xff' >&3
    timeout 5 head -c 8 <&3 | tail -c 4) 2>/dev/null)" || return 1
  [[ "$reply" == Cncd ]]
}

# Whether process $1 is a Kafka broker running this directory's config (its last argument).
is_our_broker() {
  [[ "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true)" == *" kafka.Kafka $config " ]]
}

# Pid of the broker this script started, if it is still alive. A pid file left behind (a reboot,
# a killed shell) may name another process by now: the pid counts only when that process is a
# Kafka broker running this directory's config; otherwise the stale file is removed. A broker of
# this directory whose pid file was lost or damaged is found by its command line (the pid file is
# written again): otherwise it could no longer be stopped, and reset would delete its data under it.
running_pid() {
  local pid=""
  if [[ -f "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      pid=""
    elif ! is_our_broker "$pid"; then
      say "pid file $pidfile names process $pid, which is not this broker: removing the stale file"
      rm -f "$pidfile"
      pid=""
    fi
  fi
  if [[ -z "$pid" ]]; then
    local f candidate
    for f in $(grep -lsaF -- "$config" /proc/[0-9]*/cmdline 2>/dev/null || true); do
      candidate="${f#/proc/}"
      candidate="${candidate%/cmdline}"
      if is_our_broker "$candidate"; then
        say "found this directory's broker running as pid $candidate without a valid pid file: writing it again"
        echo "$candidate" >"$pidfile"
        pid="$candidate"
        break
      fi
    done
  fi
  [[ -n "$pid" ]] || return 1
  printf '%s' "$pid"
}

# The client port of the running broker of this directory (its port file; KAFKA_PORT if none).
running_port() {
  cat "$portfile" 2>/dev/null || echo "$port"
}

# Says what the jars' failure looks like when a Java run failed on classes it could not load.
damaged_jars_hint() {
  if grep -qE 'ClassNotFoundException|NoClassDefFoundError|ZipException|Invalid or corrupt jarfile|error in opening zip file' "$logfile" 2>/dev/null; then
    say "classes could not be loaded: the jars in $libs look damaged or incomplete; delete that folder (rm -rf '$libs') and start again to fetch them afresh"
  fi
}

# Waits (up to $timeout s) until the broker of pid $1 is ready; on failure it is stopped, the pid
# file removed, and the script exits 1 (a broker that never got ready must not be left running:
# the next start would take it for a ready one).
await_ready() {
  local pid="$1" waited=0
  until broker_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "broker exited during startup; last log lines:"
      tail -n 30 "$logfile" >&2
      damaged_jars_hint
      rm -f "$pidfile"
      exit 1
    fi
    if (( waited >= timeout )); then
      say "broker not ready after ${timeout}s; stopping it. Last log lines:"
      tail -n 30 "$logfile" >&2
      kill_broker "$pid"
      exit 1
    fi
    if (( waited % 5 == 0 )); then say "waiting for the broker... (${waited}s)"; fi
    sleep 1
    waited=$((waited + 1))
  done
  say "ready on 127.0.0.1:$port after ${waited}s (pid $pid)"
}

# SIGTERM, then SIGKILL after 60 s; returns once the process is gone, and removes the pid file.
kill_broker() {
  local pid="$1" waited=0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= 60 )); then
      say "broker did not stop after 60s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
}

# The marker .complete lists the SHA-256 of every jar fetched: a jar changed or missing since
# (a damaged disk, a partial copy of the cache) makes the next start fetch them all again. An
# empty marker (written by older versions of this script) is not checked.
fetch_jars() {
  if [[ -f "$libs/.complete" ]]; then
    if [[ ! -s "$libs/.complete" ]] || (cd "$libs" && sha256sum --quiet --strict -c .complete >/dev/null 2>&1); then return 0; fi
    say "the jar cache $libs is damaged (a jar is missing or changed since it was fetched): fetching it again"
  fi
  command -v mvn >/dev/null || { say "mvn not found: install Maven 3.8+ (apt-get install maven)"; exit 1; }
  say "fetching Apache Kafka $version jars from Maven Central into $libs"
  rm -rf "$libs"
  mkdir -p "$libs"
  if ! mvn -B -q -Dstyle.color=never -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -Dkafka.version="$version" -DoutputDirectory="$libs"; then
    rm -rf "$libs"
    say "Maven could not fetch Apache Kafka $version (is KAFKA_VERSION a released version? is Maven Central reachable?)"
    exit 1
  fi
  [[ -f "$libs/kafka_2.13-$version.jar" ]] || { say "Maven did not deliver kafka_2.13-$version.jar"; exit 1; }
  (cd "$libs" && sha256sum -- *.jar >.complete.tmp && mv .complete.tmp .complete)
}

write_config() {
  mkdir -p "$dir"
  local client=PLAINTEXT sasl="" tls=""
  if [[ -n "$tls_cert$tls_key" ]]; then
    [[ -f "$tls_cert" && -f "$tls_key" ]] || { say "KAFKA_TLS_CERT and KAFKA_TLS_KEY must both name PEM files"; exit 1; }
    # A PEM keystore is the key followed by its certificate; the broker trusts its own certificate
    # for its connections to itself (inter-broker traffic uses the client listener).
    cat "$tls_key" "$tls_cert" >"$dir/keystore.pem"
    client=SSL
    tls="ssl.keystore.type=PEM
ssl.keystore.location=$dir/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls_cert"
  fi
  if [[ -n "$sasl_plain" ]]; then
    [[ "$sasl_plain" == *:* ]] || { say "KAFKA_SASL_PLAIN must be user:password"; exit 1; }
    local user="${sasl_plain%%:*}" password="${sasl_plain#*:}"
    if [[ "$client" == SSL ]]; then client=SASL_SSL; else client=SASL_PLAINTEXT; fi
    local lower
    lower="$(printf '%s' "$client" | tr '[:upper:]' '[:lower:]')"
    sasl="sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.$lower.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$user\" password=\"$password\" user_$user=\"$password\";"
  fi
  cat >"$config" <<EOF
# Written by scripts/kafka.sh: single-node KRaft broker + controller for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$client://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$client://127.0.0.1:$port
listener.security.protocol.map=$client:$client,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=$client
$sasl
$tls
log.dirs=$data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
# Concord's Kafka transport creates its topics itself; a typo in a topic name should fail, not create one.
auto.create.topics.enable=false
# Tests start consumer groups often: do not wait for more members before the first rebalance.
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
  cat >"$log4j" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
EOF
}

format_storage() {
  if [[ -f "$data/meta.properties" ]]; then return 0; fi
  # A cluster id is a Kafka Uuid: 16 random bytes as URL-safe base64 without padding (22 chars).
  local cluster_id
  # A leading '-' would be read by StorageTool as an option: draw again until it does not start with one.
  cluster_id="-"
  while [ "${cluster_id:0:1}" = "-" ]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
  done
  say "formatting KRaft storage in $data (cluster id $cluster_id)"
  mkdir -p "$data"
  "$java" -Xmx256m -Dlog4j.configuration="file:$log4j" -cp "$libs/*" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$config" >>"$logfile" 2>&1 \
    || { say "storage format failed; see $logfile"; tail -n 20 "$logfile" >&2; damaged_jars_hint; exit 1; }
}

# Ready = the client port accepts connections and the server logged the end of its startup.
broker_ready() {
  port_open "$port" && grep -q 'Kafka Server started' "$logfile" 2>/dev/null
}

start() {
  # A release number only: it names the jars on Maven Central and the folder they are cached in.
  [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([.-][A-Za-z0-9]+)*$ ]] || { say "KAFKA_VERSION must be an Apache Kafka release such as 3.9.1, got '$version'"; exit 2; }
  [[ "$timeout" =~ ^[0-9]+$ ]] || { say "KAFKA_START_TIMEOUT must be a number of seconds, got '$timeout'"; exit 2; }
  if pid="$(running_pid)"; then
    local running_port
    running_port="$(running_port)"
    if [[ "$running_port" != "$port" ]]; then
      # Waiting for it on the other port would time out, and the timeout stops it.
      say "a broker of $dir is already running (pid $pid) on 127.0.0.1:$running_port, not on $port; stop it first (KAFKA_PORT=$running_port bash scripts/kafka.sh stop) or use another KAFKA_DIR"
      exit 1
    fi
    # Started by an earlier call, perhaps still starting: ready only once it says so.
    say "already running (pid $pid) on 127.0.0.1:$port"
    await_ready "$pid"
    return 0
  fi
  if port_open "$port"; then
    if speaks_kafka "$port"; then
      say "a Kafka broker not started by this script already listens on 127.0.0.1:$port; not starting another"
      return 0
    fi
    say "127.0.0.1:$port is taken by a program that does not answer as a Kafka broker: stop it, or set KAFKA_PORT to a free port"
    exit 1
  fi
  if port_open "$controller_port"; then
    say "127.0.0.1:$controller_port (the controller port) is taken by another program: stop it, or set KAFKA_CONTROLLER_PORT to a free port"
    exit 1
  fi
  command -v "$java" >/dev/null || { say "$java not found: install Java 17+ (apt-get install openjdk-17-jre-headless), or set JAVA_HOME to one"; exit 1; }
  fetch_jars
  write_config
  : >"$logfile"
  format_storage
  say "starting Kafka $version on 127.0.0.1:$port (controller 127.0.0.1:$controller_port), log: $logfile"
  # setsid + nohup: the broker outlives this shell and the terminal; its own session gets no SIGHUP.
  # shellcheck disable=SC2086 # $heap is a list of JVM flags
  setsid nohup "$java" $heap -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$log4j" -cp "$libs/*" kafka.Kafka "$config" \
    >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "$port" >"$portfile"
  await_ready "$!"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile"
    if port_open "$port"; then
      say "what listens on 127.0.0.1:$port was not started by this script (with KAFKA_DIR=$dir); leaving it alone"
    else
      say "not running"
    fi
    return 0
  fi
  # The broker of this directory, but on another port than the one asked for: whoever asked meant
  # another broker (stopping this one would stop a broker others may be using).
  if [[ "$(running_port)" != "$port" ]]; then
    say "the broker of $dir (pid $pid) serves 127.0.0.1:$(running_port), not $port; not stopping it (KAFKA_PORT=$(running_port) bash scripts/kafka.sh stop stops it)"
    exit 1
  fi
  say "stopping broker (pid $pid)"
  kill_broker "$pid"
  say "stopped"
}

status() {
  local pid=""
  if pid="$(running_pid)" && [[ "$(running_port)" != "$port" ]]; then
    say "the broker of $dir (pid $pid) serves 127.0.0.1:$(running_port), not $port"
    pid=""
  fi
  if port_open "$port"; then
    if [[ -n "$pid" ]]; then
      say "running on 127.0.0.1:$port (pid $pid)"
      return 0
    fi
    if speaks_kafka "$port"; then
      say "a broker accepts connections on 127.0.0.1:$port (not started by this script)"
      return 0
    fi
    say "127.0.0.1:$port is taken by a program that does not answer as a Kafka broker"
    return 3
  fi
  if [[ -n "$pid" ]]; then
    say "starting (pid $pid), not yet accepting connections on 127.0.0.1:$port"
  else
    say "not running"
  fi
  return 3
}

reset() {
  stop
  say "deleting broker data in $data"
  rm -rf "$data"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) reset ;;
  *)
    echo "usage: bash scripts/kafka.sh start|stop|status|reset" >&2
    exit 2
    ;;
esac
