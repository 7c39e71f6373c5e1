#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, only when it is missing.
set -euo pipefail
need=()
command -v dotnet >/dev/null || { echo "dotnet SDK 10 is required (see README.md)"; exit 1; }
command -v curl >/dev/null || need+=(curl)
# Rate-limiting and cluster-mode tests start real redis-servers on ephemeral ports (Sentinel too: `redis-server --sentinel`).
command -v redis-server >/dev/null || need+=(redis-server)
# promtool validates the /metrics exposition and config/prometheus/alerts.yml. Debian ships it in the (large)
# prometheus package; --no-install-recommends keeps the install to what promtool needs. Check with
# `apt-cache policy prometheus`.
command -v promtool >/dev/null || need+=(prometheus)
# The canonical-request tests put a real nginx (it normalises paths) behind the gateway.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
# The WAF differential tests run nginx + ModSecurity v3 + the OWASP CRS as the reference. Debian's module
# (libnginx-mod-http-modsecurity, which pulls libmodsecurity3) is built against the nginx-abi of Debian's `nginx`
# package, which nginx-light depends on, so it loads into the nginx above. Check with
# `apt-cache policy libnginx-mod-http-modsecurity modsecurity-crs libmodsecurity3`.
[ -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ] || need+=(libnginx-mod-http-modsecurity)
[ -d /usr/share/modsecurity-crs/rules ] || need+=(modsecurity-crs)
# The service tests check the unit `fastgate service unit` writes with systemd's own parser (systemd-analyze verify).
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "missing: ${need[*]} (run as root or install them)"; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  # the packages' services (nginx on :80, redis on :6379) are not wanted: the tests start their own on ephemeral
  # ports. A policy-rc.d that refuses every start keeps the installs from starting them (removed again after).
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq
  rc=0
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { echo "apt-get install ${need[*]} failed ($rc)"; exit "$rc"; }
fi
echo "test dependencies present"
