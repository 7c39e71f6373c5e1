#!/usr/bin/env bash
# Installs what `make compare` and perf/h2.sh need (nginx, haproxy, wrk, curl, openssl, h2load) when it is missing.
# Idempotent and quiet; leaves no system nginx/haproxy service running.
set -euo pipefail

need=()
command -v nginx   >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]   || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk     >/dev/null 2>&1 || need+=(wrk)
command -v curl    >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# h2load (perf/h2.sh: the HTTP/2 rows)
command -v h2load  >/dev/null 2>&1 || need+=(nghttp2-client)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-tools: missing ${need[*]}; run as root (or install them) first" >&2
  exit 1
fi

echo "install-tools: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d exit 101 keeps the packages' services from being started by the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

log=$(mktemp)
if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"

# In case a service got started anyway (no policy-rc.d honoured), stop and disable it.
for svc in nginx haproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  else
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
# Without an init system the package's postinst may still leave a daemon: stop it by its pid file.
for pidfile in /run/nginx.pid /run/haproxy.pid; do
  if [ -s "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
  fi
done
