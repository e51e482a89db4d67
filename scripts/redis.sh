#!/usr/bin/env bash
# Makes sure a Redis server is reachable for Concord's integration tests.
#
#   bash scripts/redis.sh start    REDIS_URL if set, else 127.0.0.1:6379 if it answers PING,
#                                  else starts redis-server there (no persistence) when installed
#   bash scripts/redis.sh status   exit 0 when the server answers PING, 3 when not
#   bash scripts/redis.sh stop     stops a redis-server this script started (its pid file under
#                                  <repo>/.redis); any other server is left alone
#
# REDIS_PORT (default 6379) picks another local port.
#
# A REDIS_URL server is only checked, never started: it belongs to whoever configured it.
set -euo pipefail

host=127.0.0.1
port="${REDIS_PORT:-6379}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="$repo/.redis"
pidfile="$dir/redis-$port.pid"

say() { printf 'redis.sh: %s\n' "$*" >&2; }

# PING through redis-cli when installed, else through bash's /dev/tcp with the inline command form.
ping_server() {
  if [[ -n "${REDIS_URL:-}" ]]; then
    command -v redis-cli >/dev/null || { say "REDIS_URL is set but redis-cli is not installed; cannot check it"; return 1; }
    [[ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" == PONG ]]
    return
  fi
  if command -v redis-cli >/dev/null; then
    [[ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" == PONG ]]
    return
  fi
  local reply
  # The braces keep the 2>/dev/null from applying to the rest of the script (exec makes redirects permanent).
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3>&-
  [[ "$reply" == +PONG* ]]
}

where() { if [[ -n "${REDIS_URL:-}" ]]; then printf 'REDIS_URL'; else printf '%s:%s' "$host" "$port"; fi; }

start() {
  if ping_server; then
    say "reachable at $(where)"
    return 0
  fi
  if [[ -n "${REDIS_URL:-}" ]]; then
    say "REDIS_URL is set but its server does not answer PING"
    exit 1
  fi
  # Another program on the port: redis-server would fail to bind, unseen (it is daemonized), and
  # this script waited 10 s for a PONG that could not come.
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    say "$host:$port is taken by a program that does not answer PING with PONG (not Redis, or a Redis that needs a password): stop it, or pick a free port with REDIS_PORT (and point the tests at it with REDIS_URL)"
    exit 1
  fi
  command -v redis-server >/dev/null || {
    say "nothing answers on $host:$port and redis-server is not installed (apt-get install redis-server)"
    exit 1
  }
  say "starting redis-server on $host:$port (no persistence; pid file $pidfile)"
  mkdir -p "$dir"
  redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no --dir "$dir" --pidfile "$pidfile" >/dev/null
  local waited=0
  until ping_server; do
    if (( waited >= 100 )); then say "redis-server did not answer PING within 10s"; exit 1; fi
    sleep 0.1
    waited=$((waited + 1))
  done
  say "ready on $host:$port"
}

# Pid of the redis-server this script started on $port, if it still runs.
started_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 1; }
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)" == *redis-server*":$port"* ]] || { rm -f "$pidfile"; return 1; }
  printf '%s' "$pid"
}

stop() {
  local pid
  if ! pid="$(started_pid)"; then
    if ping_server; then say "the server at $(where) was not started by this script; leaving it alone"; else say "not running"; fi
    return 0
  fi
  kill "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= 100 )); then say "redis-server (pid $pid) did not stop within 10s; killing it"; kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
  say "stopped"
}

status() {
  if ping_server; then
    say "reachable at $(where)"
    return 0
  fi
  say "not reachable at $(where)"
  return 3
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  *)
    echo "usage: bash scripts/redis.sh start|status|stop" >&2
    exit 2
    ;;
esac
