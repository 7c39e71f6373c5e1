#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, only when it is missing.
set -euo pipefail
need=()
command -v dotnet >/dev/null || { echo "dotnet SDK 10 is required (see README.md)"; exit 1; }
command -v curl >/dev/null || need+=(curl)
# Rate-limiting cluster tests start a real redis-server on an ephemeral port.
command -v redis-server >/dev/null || need+=(redis-server)
# promtool validates the /metrics exposition and config/prometheus/alerts.yml. Debian ships it in the (large)
# prometheus package; --no-install-recommends keeps the install to what promtool needs. Check with
# `apt-cache policy prometheus`.
command -v promtool >/dev/null || need+=(prometheus)
# The canonical-request tests put a real nginx (it normalises paths) behind the gateway.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "missing: ${need[*]} (run as root or install them)"; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "test dependencies present"
