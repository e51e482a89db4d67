#!/usr/bin/env bash
# Makes sure a Redis server is reachable for Concord's integration tests.
#
#   bash scripts/redis.sh start    REDIS_URL if set, else 127.0.0.1:6379 if it answers PING,
#                                  else starts redis-server there (no persistence) when installed
#   bash scripts/redis.sh status   exit 0 when the server answers PING, 3 when not
#
# REDIS_PORT (default 6379) picks another local port.
#
# A REDIS_URL server is only checked, never started: it belongs to whoever configured it.
set -euo pipefail

host=127.0.0.1
port="${REDIS_PORT:-6379}"

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
  command -v redis-server >/dev/null || {
    say "nothing answers on $host:$port and redis-server is not installed (apt-get install redis-server)"
    exit 1
  }
  say "starting redis-server on $host:$port (no persistence)"
  redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no >/dev/null
  local waited=0
  until ping_server; do
    if (( waited >= 100 )); then say "redis-server did not answer PING within 10s"; exit 1; fi
    sleep 0.1
    waited=$((waited + 1))
  done
  say "ready on $host:$port"
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
  *)
    echo "usage: bash scripts/redis.sh start|status" >&2
    exit 2
    ;;
esac
