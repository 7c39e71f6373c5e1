#!/usr/bin/env bash
# HTTP/2 rows (issue 18): h2load (Debian nghttp2-client) against nginx's `http2` listener and FastGate's
# "http2" listener, both h2c (prior knowledge) in front of one nginx upstream (HTTP/1.1, 13-byte body), plus
# FastGate's HTTP/1.1 path under the same tool (h2load --h1) for the per-request cost of the HTTP/2 path.
# Bounded: each row is REQUESTS requests (and at most TIMEOUT seconds); everything on 127.0.0.1; every process
# started here is stopped on exit. Prints a Markdown table and writes it to perf/reports/h2-<timestamp>.md.
#
# Settings: REQUESTS=50000 CLIENTS=16 STREAMS=10 (h2load -n/-c/-m; --h1 rows use -m 1) WARMUP=5000
#           TIMEOUT=120 PORT_BASE=18400 WORKERS=auto (nginx worker_processes)
#           FASTGATE: command that runs the gateway (default: dotnet src/FastGate.Server/bin/Release/net10.0/fastgate.dll)
set -uo pipefail
REQUESTS=${REQUESTS:-50000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-10}
WARMUP=${WARMUP:-5000}
TIMEOUT=${TIMEOUT:-120}
PORT_BASE=${PORT_BASE:-18400}
WORKERS=${WORKERS:-auto}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/perf/install-tools.sh" || { echo "h2: could not install the tools" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
FASTGATE=${FASTGATE:-dotnet $ROOT/src/FastGate.Server/bin/Release/net10.0/fastgate.dll}
UP_PORT=$PORT_BASE; NGINX_PORT=$((PORT_BASE + 1)); FG_PORT=$((PORT_BASE + 2)); FG_ADMIN=$((PORT_BASE + 102))
TMP=$(mktemp -d -t fastgate-h2.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT
nginx_user=""; [ "$(id -u)" = 0 ] && nginx_user="user root;"

nginx_conf() { # nginx_conf NAME SERVER-BLOCK [HTTP-EXTRA]
  local dir=$TMP/$1
  mkdir -p "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
$nginx_user
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy; fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  keepalive_timeout 120s; keepalive_requests 10000000; server_tokens off;
  ${3:-}
  server {
$2
  }
}
EOF
}
start_bg() { "${@:2}" >"$1" 2>&1 </dev/null & START_PID=$!; PIDS+=("$START_PID"); }
wait_ready() { # wait_ready URL [curl args]: up to 30 s
  local i; for i in $(seq 300); do curl -fs -o /dev/null --max-time 1 "${@:2}" "$1" && return 0; sleep 0.1; done; return 1
}
cpu_ticks() { # utime+stime of a process and its children (nginx: the master and its workers)
  local p t=0; for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"
}

ROWS=()
run_row() { # run_row NAME PID URL H2LOAD-ARGS...
  local name=$1 pid=$2 url=$3 out before after rps cpu
  timeout "$TIMEOUT" h2load -n "$WARMUP" "${@:4}" "$url" >/dev/null 2>&1
  before=$(cpu_ticks "$pid")
  out=$(timeout "$TIMEOUT" h2load -n "$REQUESTS" "${@:4}" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  local ok; ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
  local p50; p50=$(awk '/^time for request:/ {print $6}' <<<"$out")
  # CPU seconds of the proxy per 10k requests (clock ticks are 1/100 s)
  cpu=$(awk -v t=$((after - before)) -v n="$REQUESTS" 'BEGIN { printf "%.2f", t / 100 / n * 10000 }')
  ROWS+=("| $name | ${rps:-n/a} | ${ok:-0}/$REQUESTS | ${p50:-n/a} | $cpu |")
  echo "h2: $name: ${rps:-n/a} req/s" >&2
}

nginx_conf upstream "    listen 127.0.0.1:$UP_PORT;
    location / { default_type text/plain; return 200 'Hello, World!'; }"
start_bg "$TMP/upstream.log" "$NGINX" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;'
wait_ready "http://127.0.0.1:$UP_PORT/" || { echo "h2: upstream did not start" >&2; cat "$TMP/upstream/logs/error.log" >&2; exit 1; }

nginx_conf proxy "    listen 127.0.0.1:$NGINX_PORT http2;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }" \
  "upstream backend { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }"
start_bg "$TMP/proxy.log" "$NGINX" -p "$TMP/proxy" -c "$TMP/proxy/nginx.conf" -g 'daemon off;'
NGINX_PID=$START_PID
wait_ready "http://127.0.0.1:$NGINX_PORT/" --http2-prior-knowledge || { echo "h2: nginx proxy did not start" >&2; cat "$TMP/proxy/logs/error.log" >&2; exit 1; }
run_row "nginx http2 (h2c)" "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/" -c "$CLIENTS" -m "$STREAMS"

cat >"$TMP/fastgate.json" <<EOF
{
  "listeners": [ { "name": "public", "address": "127.0.0.1:$FG_PORT", "http2": true } ],
  "admin": { "address": "127.0.0.1:$FG_ADMIN" },
  "clusters": [ { "id": "backend", "destinations": [ { "address": "http://127.0.0.1:$UP_PORT" } ] } ],
  "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ],
  "accessLog": { "enabled": false }
}
EOF
start_bg "$TMP/fastgate.log" $FASTGATE run --config "$TMP/fastgate.json" --log-level warning
FG_PID=$START_PID
wait_ready "http://127.0.0.1:$FG_PORT/" --http2-prior-knowledge || { echo "h2: fastgate did not start" >&2; cat "$TMP/fastgate.log" >&2; exit 1; }
FG_MEASURED=$FG_PID
run_row "fastgate http2 (h2c)" "$FG_MEASURED" "http://127.0.0.1:$FG_PORT/" -c "$CLIENTS" -m "$STREAMS"
run_row "fastgate HTTP/1.1 (h2load --h1, same listener)" "$FG_MEASURED" "http://127.0.0.1:$FG_PORT/" --h1 -c "$CLIENTS" -m 1

mkdir -p "$ROOT/perf/reports"
report="$ROOT/perf/reports/h2-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "h2load -n $REQUESTS -c $CLIENTS -m $STREAMS (HTTP/1.1 row: -m 1), one nginx upstream (13 B), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| row | req/s | 2xx | mean time for request | proxy CPU s / 10k req |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${ROWS[@]}"
} | tee "$report"
