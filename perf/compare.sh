#!/usr/bin/env bash
# `make compare`: the same bounded wrk load against one upstream (nginx returning a 13-byte body), then
# against nginx, HAProxy, YARP and FastGate each proxying to that upstream, and against the upstream
# directly. Prints one Markdown table and writes it to perf/reports/compare-<timestamp>.md.
#
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
#
# Settings (environment):
#   DURATION=10s CONNECTIONS=50 THREADS=1   the measured wrk run (2-core machine: one wrk thread)
#   WARMUP=3s                               the warm-up wrk run before each measured run
#   BODY_BYTES=13                           the upstream's response body size: 13 ("Hello, World!") or a
#                                           larger body in bytes (e.g. 1048576 for the 1 MB row, with
#                                           CONNECTIONS=8); the note column then shows each row's MB/s
#   REPEAT=1                                measured runs per row; the row shows the median by req/s
#   PORT_BASE=18000                         ports PORT_BASE.. (listeners) and PORT_BASE+100.. (admin)
#   WORKERS=auto                            nginx worker_processes (upstream and proxy), haproxy nbthread
#   ALLOC_METRIC                            FastGate's allocated-bytes counter on its admin /metrics
#   REQ_METRIC                              FastGate's handled-requests counter there (steady B/request)
#   FASTGATE                                command that runs the gateway (default: the published
#                                           artifacts/linux-x64/fastgate, else `dotnet fastgate.dll`)
#   ROWS="upstream nginx haproxy yarp fastgate fastgate-kestrel"   which rows to run (extra FastGate rows always
#                                           run); fastgate is the default transport (auto: native on Linux),
#                                           fastgate-kestrel the same gateway on Kestrel's transport;
#                                           add "fastgate-native" for the plain row on the native transport's epoll;
#                                           add "fastgate-uring" for it on io_uring ("nativeIo": "io_uring");
#                                           add "waf" for nginx+waf (ModSecurity v3 + the Debian CRS 3.3) and
#                                           fastgate+waf (the same CRS files, paranoia level 1, block mode)
#                                           add "tls" (or set TLS=1) for the TLS rows below
#   EXTRAS=1                                0: skip the extra FastGate rows (FASTGATE_ROWS)
#   FASTGATE_EXTRA="name=file[;Header: v], ..."  more FastGate rows (comma/newline separated), see FASTGATE_ROWS
#
# TLS rows (off by default; a self-signed certificate is made with openssl in the temp directory):
#   nginx+tls / fastgate+tls                   wrk -> https:// listener (TLS terminated) -> http:// upstream
#                                              (FastGate: perf/configs/tls.json, @CERT@ and @KEY@ placeholders)
#   nginx+upstream-tls / fastgate+upstream-tls wrk -> http:// listener -> https:// upstream (nginx with TLS)
#                                              (FastGate: perf/configs/upstream-tls.json, @UPSTREAM_TLS@ and @CA@)
# The "× nginx" column of a row named X+S uses the nginx+S row when there is one, else the nginx row.
set -uo pipefail

# ---- settings ---------------------------------------------------------------------------------------
ALLOC_METRIC=${ALLOC_METRIC:-dotnet_gc_allocated_bytes_total}
REQ_METRIC=${REQ_METRIC:-fastgate_request_duration_seconds_count}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
REPEAT=${REPEAT:-1}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
PORT_BASE=${PORT_BASE:-18000}
WORKERS=${WORKERS:-auto}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
ROWS=${ROWS:-upstream nginx haproxy yarp fastgate fastgate-kestrel}
[ "${TLS:-0}" = 1 ] && ROWS="$ROWS tls"
EXTRAS=${EXTRAS:-1}
BODY='Hello, World!' # 13 bytes
BODY_BYTES=${BODY_BYTES:-13}
[[ "$BODY_BYTES" =~ ^[0-9]+$ ]] && (( BODY_BYTES >= 1 && BODY_BYTES <= 67108864 )) || { echo "compare: BODY_BYTES must be 1..67108864" >&2; exit 2; }

# The tools first: the JWT row below needs openssl.
bash "$(dirname "$0")/install-tools.sh" || { echo "compare: could not install the tools" >&2; exit 1; }

# The JWT row: a random HS256 secret for this run (@JWT_SECRET@ in the config) and a token signed with it,
# valid for a year from now (minted here, so it never goes stale). Every request presents the same token:
# after the first, the gateway finds it in its validated-token cache.
JWT_SECRET=$(openssl rand -hex 32)
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
mint_jwt() { # mint_jwt SECRET: an HS256 token for perf/configs/jwt.json's issuer
  local now h p s
  now=$(date +%s)
  h=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
  p=$(printf '{"iss":"https://bench.fastgate.local","aud":"fastgate-bench","sub":"bench","scope":"read","iat":%d,"exp":%d}' \
    "$now" $((now + 365 * 86400)) | b64url)
  s=$(printf '%s' "$h.$p" | openssl dgst -sha256 -hmac "$1" -binary | b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}
JWT_TOKEN=$(mint_jwt "$JWT_SECRET")

# Extra FastGate rows: "name=config-file" or "name=config-file;Header: value" (the header is sent by wrk
# on every request, e.g. an API key). The config file is a template: @LISTEN@ (host:port of the listener),
# @ADMIN@ (host:port of the admin listener), @UPSTREAM@ (http://host:port of the upstream) and @JWT_SECRET@
# (the secret JWT_TOKEN is signed with) are replaced before the gateway starts. Later issues add their rows
# here, e.g.
#   "fastgate+ratelimit=perf/configs/ratelimit.json"
#   "fastgate+apikey=perf/configs/apikey.json;X-Api-Key: bench-key"
FASTGATE_ROWS=(
  "fastgate+policy=perf/configs/policy.json"
  "fastgate+ratelimit=perf/configs/ratelimit.json"
  "fastgate+apikey=perf/configs/apikey.json;X-API-Key: bench-key"
  "fastgate+jwt=perf/configs/jwt.json;Authorization: Bearer $JWT_TOKEN"
  "fastgate+tokens=perf/configs/tokens.json;X-API-Key: bench-key"
  "fastgate+health=perf/configs/health.json"
)
[ "$EXTRAS" = 1 ] || FASTGATE_ROWS=()
if [ -n "${FASTGATE_EXTRA:-}" ]; then
  # Entries separated by newlines or commas (a header may contain spaces).
  while IFS= read -r _spec; do
    _spec=$(echo "$_spec" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    [ -n "$_spec" ] && FASTGATE_ROWS+=("$_spec")
  done < <(printf '%s\n' "$FASTGATE_EXTRA" | tr ',' '\n')
fi

# ---- setup ------------------------------------------------------------------------------------------
cd "$(dirname "$0")/.."
ROOT=$PWD
DOTNET=${DOTNET:-dotnet}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d -t fastgate-compare.XXXXXX)
PIDS=()

stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_bg() { # start_bg LOG CMD...: starts CMD in the background, sets START_PID
  "${@:2}" >"$1" 2>&1 </dev/null &
  START_PID=$!
  PIDS+=("$START_PID")
}
stop_row() { # stop_row PID: stops one row's process and forgets it
  local pid=$1 keep=() p
  stop_pid "$pid"
  CPU_PID=""
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ready() { # wait_ready PID URL [HEADER]: until URL answers 200 with BODY; 1 if the process dies or times out
  local pid=$1 url=$2 header=${3:-} deadline=$((SECONDS + STARTUP_TIMEOUT)) got
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -n "$header" ]; then
      got=$(curl -sk --max-time 1 -H "$header" "$url" 2>/dev/null) && [ "$got" = "$BODY" ] && return 0
    else
      got=$(curl -sk --max-time 1 "$url" 2>/dev/null) && [ "$got" = "$BODY" ] && return 0
    fi
    sleep 0.2
  done
  return 1
}

read_counter() { # read_counter URL METRIC: the metric's value (summed over label sets), empty if absent
  curl -s --max-time 5 "$1" 2>/dev/null | awk -v m="$2" '
    $0 !~ /^#/ && ($1 == m || index($1, m "{") == 1) { s += $NF; n++ }
    END { if (n) printf "%.0f\n", s }'
}

read_counters() { # read_counters URL METRIC-A METRIC-B: "A B" from one scrape, empty unless both are there
  curl -s --max-time 5 "$1" 2>/dev/null | awk -v a="$2" -v b="$3" '
    $0 ~ /^#/ { next }
    $1 == a || index($1, a "{") == 1 { sa += $NF; na++ }
    $1 == b || index($1, b "{") == 1 { sb += $NF; nb++ }
    END { if (na && nb) printf "%.0f %.0f\n", sa, sb }'
}

seconds_of() { # 10s -> 10, 2m -> 120, 1h -> 3600
  local d=$1
  case $d in
    *s) echo "${d%s}" ;; *m) echo $(( ${d%m} * 60 )) ;; *h) echo $(( ${d%h} * 3600 )) ;; *) echo "$d" ;;
  esac
}

to_ms() { # wrk latency (e.g. 812.00us, 1.23ms, 1.01s) -> milliseconds with 2 decimals
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.2f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else printf "%s", v }'
}

cpu_ticks() { # cpu_ticks PID: user+system clock ticks of PID and its child processes (nginx's workers), from /proc
  local p total=0 t
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) && total=$((total + ${t:-0}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# Runs the warm-up and the measured load against URL; sets RPS, P50, P99, REQUESTS, ERRORS.
# CPU_PID (optional): the proxy's process; sets CPU_US, its CPU microseconds (user + system, children included) per
# request over the measured runs: steadier than req/s on a shared machine.
# ALLOC_URL (optional): read ALLOC_METRIC there before and after the measured run; sets BPR. When it also has
# REQ_METRIC, sets SBPR (steady bytes per request): ALLOC_METRIC and REQ_METRIC read at 1/4 and 3/4 of each
# measured run, on connections already open, less what one scrape allocates (measured by two scrapes after the
# warm-up). BPR includes the new connections (wrk opens its own for each run) and the scrapes; SBPR does not.
# One scrape allocates 100-160 KB and varies by 20-50 KB, so SBPR is good to about ±0.4 B over 100k requests.
run_load() { # run_load NAME URL [HEADER]
  local name=$1 url=$2 header=${3:-} out=$TMP/wrk-$1.txt limit before after
  [ "$BODY_BYTES" != 13 ] && url="${url%/}/big"
  local hargs=()
  [ -n "$header" ] && hargs=(-H "$header")
  limit=$(( $(seconds_of "$DURATION") + $(seconds_of "$WARMUP") + 30 ))
  timeout "$limit" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" --timeout 2s "${hargs[@]}" "$url" >/dev/null 2>&1
  local scrape="" s1 s2 steady_bytes=0 steady_requests=0 steady_ok="" quarter wrk_pid
  if [ -n "${ALLOC_URL:-}" ] && [ -n "$(read_counters "$ALLOC_URL" "$ALLOC_METRIC" "$REQ_METRIC")" ]; then
    s1=$(read_counter "$ALLOC_URL" "$ALLOC_METRIC"); s2=$(read_counter "$ALLOC_URL" "$ALLOC_METRIC")
    [ -n "$s1" ] && [ -n "$s2" ] && scrape=$((s2 - s1)) && steady_ok=1
  fi
  quarter=$(awk -v d="$(seconds_of "$DURATION")" 'BEGIN { printf "%.2f", d / 4 }')
  before=""
  [ -n "${ALLOC_URL:-}" ] && before=$(read_counter "$ALLOC_URL" "$ALLOC_METRIC")
  local cpu_before=""
  [ -n "${CPU_PID:-}" ] && cpu_before=$(cpu_ticks "$CPU_PID")
  local run runs=() total=0 n
  for run in $(seq "$REPEAT"); do
    timeout "$limit" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 2s --latency "${hargs[@]}" "$url" \
      >"$out.$run" 2>&1 &
    wrk_pid=$!
    if [ -n "$steady_ok" ]; then
      sleep "$quarter"; s1=$(read_counters "$ALLOC_URL" "$ALLOC_METRIC" "$REQ_METRIC")
      sleep "$quarter"; sleep "$quarter"; s2=$(read_counters "$ALLOC_URL" "$ALLOC_METRIC" "$REQ_METRIC")
      if [ -n "$s1" ] && [ -n "$s2" ]; then
        steady_bytes=$((steady_bytes + ${s2% *} - ${s1% *} - scrape))
        steady_requests=$((steady_requests + ${s2#* } - ${s1#* }))
      else
        steady_ok=""
      fi
    fi
    wait "$wrk_pid"
    n=$(awk '/requests in/ { print $1 }' "$out.$run")
    total=$((total + ${n:-0}))
    runs+=("$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out.$run") $out.$run")
  done
  after=""
  [ -n "${ALLOC_URL:-}" ] && after=$(read_counter "$ALLOC_URL" "$ALLOC_METRIC")
  CPU_US=""
  if [ -n "$cpu_before" ] && [ "$total" -gt 0 ]; then
    CPU_US=$(awk -v a="$(cpu_ticks "$CPU_PID")" -v b="$cpu_before" -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", (a - b) * 1e6 / hz / n }')
  fi
  # The median run by req/s stands for the row; bytes per request count every measured run.
  cp "$(printf '%s\n' "${runs[@]}" | sort -n | awk -v m=$(( (REPEAT + 1) / 2 )) 'NR == m { print $2 }')" "$out"
  if [ "$REPEAT" -gt 1 ]; then
    echo "compare: $name req/s per run: $(printf '%s\n' "${runs[@]}" | awk '{ printf "%s ", $1 }')" >&2
  fi
  RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
  MBPS=$(awk '/^Transfer\/sec:/ { v = $2; u = v; gsub(/[0-9.]/, "", u); gsub(/[A-Za-z]/, "", v);
    f = u == "GB" ? 1024 : u == "MB" ? 1 : u == "KB" ? 1 / 1024 : 1 / 1048576; printf "%.0f", v * f }' "$out")
  P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  REQUESTS=$(awk '/requests in/ { print $1 }' "$out")
  ERRORS=$(awk '
    /Non-2xx or 3xx responses:/ { e += $NF }
    /Socket errors:/ { for (i = 4; i <= NF; i += 2) { v = $i; gsub(/,/, "", v); e += v } }
    END { print e + 0 }' "$out")
  if [ "$ERRORS" != 0 ]; then
    # which kind (wrk: connect / read / write / timeout, or a status), per run
    for f in "$out".*; do
      grep -hE 'Socket errors:|Non-2xx or 3xx' "$f" | sed "s|^|compare: $name errors (run ${f##*.}): |" >&2 || true
    done
  fi
  BPR=""
  SBPR=""
  if [ -n "$steady_ok" ] && [ "$steady_requests" -gt 0 ]; then
    SBPR=$(awk -v a="$steady_bytes" -v n="$steady_requests" 'BEGIN { printf "%.1f", a / n }')
    echo "compare: $name steady: $steady_bytes bytes for $steady_requests requests (one scrape, $scrape bytes, taken off) = $SBPR B/request" >&2
  fi
  if [ -n "${ALLOC_URL:-}" ]; then
    if [ -n "$before" ] && [ -n "$after" ] && [ "$total" -gt 0 ]; then
      BPR=$(awk -v a="$after" -v b="$before" -v n="$total" 'BEGIN { printf "%.1f", (a - b) / n }')
      echo "compare: $name allocated $((after - before)) bytes for $total requests = $BPR B/request" >&2
    else
      BPR="n/a"
      echo "compare: $name: no '$ALLOC_METRIC' at $ALLOC_URL" >&2
    fi
  fi
  if [ -z "$RPS" ]; then
    echo "compare: $name: wrk gave no result:" >&2
    sed 's/^/  /' "$out" >&2
    return 1
  fi
  return 0
}

# Table rows: name|req/s|p50|p99|errors|bytes/req|note
RESULTS=()
record() {
  local note=${2:-}
  [ "$BODY_BYTES" != 13 ] && note="${MBPS:-?} MB/s${note:+; $note}"
  RESULTS+=("$1|$RPS|$P50|$P99|$ERRORS|${BPR:--}|${SBPR:--}|${CPU_US:--}|$note")
}
record_na() { RESULTS+=("$1|not available|-|-|-|-|-|-|$2"); echo "compare: $1: not available ($2)" >&2; }

UP_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
HAPROXY_PORT=$((PORT_BASE + 2))
YARP_PORT=$((PORT_BASE + 3))
FG_PORT=$((PORT_BASE + 4))
FG_ADMIN=$((PORT_BASE + 104))
FG_NATIVE_PORT=$((PORT_BASE + 40))   # the fastgate-native row (its admin: +140)
FG_URING_PORT=$((PORT_BASE + 41)); FG_URING_ADMIN=$((PORT_BASE + 141)) # the fastgate-uring row
FG_KESTREL_PORT=$((PORT_BASE + 42)); FG_KESTREL_ADMIN=$((PORT_BASE + 142)) # the fastgate-kestrel row
FG_NATIVE_ADMIN=$((PORT_BASE + 140))
UPSTREAM=http://127.0.0.1:$UP_PORT
# TLS rows: 50.. (the TLS upstream and the proxies), 150.. (FastGate admin)
UP_TLS_PORT=$((PORT_BASE + 50))
NGINX_TLS_PORT=$((PORT_BASE + 51))
NGINX_UPTLS_PORT=$((PORT_BASE + 52))
FG_TLS_PORT=$((PORT_BASE + 53))
FG_UPTLS_PORT=$((PORT_BASE + 54))
FG_TLS_ADMIN=$((PORT_BASE + 153))
FG_UPTLS_ADMIN=$((PORT_BASE + 154))
UPSTREAM_TLS=https://127.0.0.1:$UP_TLS_PORT
# WAF rows: 60.. (nginx + ModSecurity, FastGate + CRS), 160 (FastGate admin)
NGINX_WAF_PORT=$((PORT_BASE + 60))
FG_WAF_PORT=$((PORT_BASE + 61))
FG_WAF_ADMIN=$((PORT_BASE + 161))

for p in $UP_PORT $NGINX_PORT $HAPROXY_PORT $YARP_PORT $FG_PORT $FG_ADMIN; do
  if port_busy "$p"; then echo "compare: 127.0.0.1:$p is in use; set PORT_BASE" >&2; exit 1; fi
done

nginx_user=""
[ "$(id -u)" -eq 0 ] && nginx_user="user root root;"

nginx_conf() { # nginx_conf NAME SERVER-BLOCK [HTTP-EXTRA] [MAIN-EXTRA]: writes $TMP/NAME/nginx.conf
  local dir=$TMP/$1
  mkdir -p "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
$nginx_user
${4:-}
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_timeout 120s;
  keepalive_requests 10000000;
  server_tokens off;
  ${3:-}
  server {
$2
  }
}
EOF
}

# ---- the upstream -----------------------------------------------------------------------------------
head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x' >"$TMP/big.txt" # the large-body row's file (BODY_BYTES)
nginx_conf upstream "    listen 127.0.0.1:$UP_PORT;
    location = /big { default_type application/octet-stream; alias $TMP/big.txt; }
    location / { default_type text/plain; return 200 '$BODY'; }"
start_bg "$TMP/upstream/out.log" "$NGINX" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;'
UP_PID=$START_PID
if ! wait_ready "$UP_PID" "$UPSTREAM/"; then
  echo "compare: the upstream nginx did not start:" >&2
  cat "$TMP/upstream/out.log" "$TMP/upstream/logs/error.log" >&2 2>/dev/null
  exit 1
fi

wants() { case " $ROWS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---- upstream directly ------------------------------------------------------------------------------
if wants upstream; then
  echo "compare: upstream (nginx, direct)" >&2
  ALLOC_URL=""
  if run_load upstream "$UPSTREAM/"; then record "upstream direct (nginx)"; else record_na "upstream direct (nginx)" "wrk failed"; fi
fi

# ---- nginx as reverse proxy -------------------------------------------------------------------------
if wants nginx; then
  echo "compare: nginx" >&2
  nginx_conf proxy "    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering on;
    }" "upstream backend { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }"
  start_bg "$TMP/proxy/out.log" "$NGINX" -p "$TMP/proxy" -c "$TMP/proxy/nginx.conf" -g 'daemon off;'
  pid=$START_PID
  ALLOC_URL=""
  CPU_PID=$pid
  if ! wait_ready "$pid" "http://127.0.0.1:$NGINX_PORT/"; then
    record_na nginx "did not start: $(tail -c 300 "$TMP/proxy/logs/error.log" "$TMP/proxy/out.log" 2>/dev/null | tr '\n' ' ')"
  elif run_load nginx "http://127.0.0.1:$NGINX_PORT/"; then record nginx; else record_na nginx "wrk failed"; fi
  stop_row "$pid"
fi

# ---- HAProxy ----------------------------------------------------------------------------------------
if wants haproxy; then
  echo "compare: haproxy" >&2
  mkdir -p "$TMP/haproxy"
  nbthread=""
  [ "$WORKERS" != auto ] && nbthread="nbthread $WORKERS"
  cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
  maxconn 4000
  $nbthread
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 120s
frontend public
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend upstream
backend upstream
  server s1 127.0.0.1:$UP_PORT
EOF
  start_bg "$TMP/haproxy/out.log" "$HAPROXY" -db -f "$TMP/haproxy/haproxy.cfg"
  pid=$START_PID
  ALLOC_URL=""
  CPU_PID=$pid
  if ! wait_ready "$pid" "http://127.0.0.1:$HAPROXY_PORT/"; then
    record_na haproxy "did not start: $(tail -c 300 "$TMP/haproxy/out.log" | tr '\n' ' ')"
  elif run_load haproxy "http://127.0.0.1:$HAPROXY_PORT/"; then record haproxy; else record_na haproxy "wrk failed"; fi
  stop_row "$pid"
fi

# ---- YARP -------------------------------------------------------------------------------------------
if wants yarp; then
  echo "compare: yarp" >&2
  YARP_DLL=perf/baselines/YarpBaseline/bin/Release/net10.0/YarpBaseline.dll
  if [ ! -f "$YARP_DLL" ] || [ "${BUILD:-0}" = 1 ]; then
    "$DOTNET" build perf/baselines/YarpBaseline -c Release -nologo -v q >"$TMP/yarp-build.log" 2>&1 ||
      { sed 's/^/  /' "$TMP/yarp-build.log" | tail -20 >&2; }
  fi
  if [ ! -f "$YARP_DLL" ]; then
    record_na yarp "build failed"
  else
    start_bg "$TMP/yarp.log" env ASPNETCORE_ENVIRONMENT=Production "$DOTNET" "$YARP_DLL" "$UPSTREAM" "$YARP_PORT"
    pid=$START_PID
    CPU_PID=$pid
    if ! wait_ready "$pid" "http://127.0.0.1:$YARP_PORT/"; then
      ALLOC_URL=""
      record_na yarp "did not start: $(tail -c 300 "$TMP/yarp.log" | tr '\n' ' ')"
    else
      ALLOC_URL="http://127.0.0.1:$YARP_PORT/__baseline/metrics"
      if run_load yarp "http://127.0.0.1:$YARP_PORT/"; then record yarp; else record_na yarp "wrk failed"; fi
    fi
    ALLOC_URL=""
    stop_row "$pid"
  fi
fi

# ---- FastGate ---------------------------------------------------------------------------------------
FG_CMD=()
fastgate_cmd() { # sets FG_CMD (building the gateway when nothing is there), FG_DESC
  if [ -n "${FASTGATE:-}" ]; then
    read -r -a FG_CMD <<<"$FASTGATE"; FG_DESC="$FASTGATE"; return 0
  fi
  local bin=artifacts/linux-x64/fastgate dll=src/FastGate.Server/bin/Release/net10.0/fastgate.dll
  if [ -x "$bin" ]; then
    FG_CMD=("$ROOT/$bin"); FG_DESC="$bin (Native AOT)"
    if [ -n "$(find src \( -name bin -o -name obj \) -prune -o \( -name '*.cs' -o -name '*.csproj' \) -newer "$bin" -print -quit 2>/dev/null)" ]; then
      echo "compare: warning: $bin is older than the sources; run 'make publish' first" >&2
      FG_DESC="$FG_DESC, older than the sources"
    fi
    return 0
  fi
  if [ ! -f "$dll" ]; then
    echo "compare: building FastGate (Release)" >&2
    "$DOTNET" build src/FastGate.Server -c Release -nologo -v q >"$TMP/fastgate-build.log" 2>&1 ||
      { sed 's/^/  /' "$TMP/fastgate-build.log" | tail -20 >&2; }
  fi
  [ -f "$dll" ] || return 1
  FG_CMD=("$DOTNET" "$ROOT/$dll"); FG_DESC="dotnet $dll (JIT)"
}

run_fastgate_row() { # run_fastgate_row NAME TEMPLATE-FILE LISTEN-PORT ADMIN-PORT [HEADER] [SCHEME]
  local name=$1 template=$2 port=$3 admin=$4 header=${5:-} scheme=${6:-http} cfg pid
  echo "compare: $name" >&2
  if [ ${#FG_CMD[@]} -eq 0 ]; then record_na "$name" "no gateway build"; return; fi
  if [ ! -f "$template" ]; then record_na "$name" "no config $template"; return; fi
  if port_busy "$port" || port_busy "$admin"; then record_na "$name" "port $port or $admin in use"; return; fi
  cfg=$TMP/$name.json
  sed -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@ADMIN@|127.0.0.1:$admin|g" -e "s|@UPSTREAM@|$UPSTREAM|g" -e "s|@JWT_SECRET@|$JWT_SECRET|g" \
    -e "s|@UPSTREAM_TLS@|$UPSTREAM_TLS|g" -e "s|@CERT@|${TLS_CERT:-}|g" -e "s|@KEY@|${TLS_KEY:-}|g" -e "s|@CA@|${TLS_CERT:-}|g" \
    "$template" >"$cfg"
  start_bg "$TMP/$name.log" "${FG_CMD[@]}" run --config "$cfg"
  pid=$START_PID
  CPU_PID=$pid
  if ! wait_ready "$pid" "$scheme://127.0.0.1:$port/" "$header"; then
    ALLOC_URL=""
    record_na "$name" "did not start or did not proxy: $(tail -c 300 "$TMP/$name.log" | tr '\n' ' ')"
  else
    ALLOC_URL="http://127.0.0.1:$admin/metrics"
    if run_load "$name" "$scheme://127.0.0.1:$port/" "$header"; then record "$name"; else record_na "$name" "wrk failed"; fi
  fi
  ALLOC_URL=""
  stop_row "$pid"
}

FG_DESC="not found"
if wants fastgate || [ ${#FASTGATE_ROWS[@]} -gt 0 ]; then
  fastgate_cmd || echo "compare: no FastGate build" >&2
fi
if wants fastgate; then
  cat >"$TMP/fastgate.template.json" <<'EOF'
{
  "listeners": [ { "name": "public", "address": "@LISTEN@" } ],
  "admin": { "address": "@ADMIN@" },
  "clusters": [ { "id": "backend", "destinations": [ { "address": "@UPSTREAM@" } ] } ],
  "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
}
EOF
  run_fastgate_row fastgate "$TMP/fastgate.template.json" "$FG_PORT" "$FG_ADMIN"
fi
# The same gateway on a chosen transport (issue 13): Kestrel's (fastgate-kestrel: the transport before the native
# one became the default, and that of other platforms), or the native one (one loop per core) waiting on epoll
# (fastgate-native) or on io_uring (fastgate-uring: one io_uring_enter per loop turn for all its I/O). The plain
# fastgate row is the default (auto: on Linux the native transport, io_uring where the kernel has it).
native_row() { # native_row NAME TRANSPORT NATIVE-IO LISTEN-PORT ADMIN-PORT
  [ "$FG_DESC" = "not found" ] && { fastgate_cmd || echo "compare: no FastGate build" >&2; }
  cat >"$TMP/$1.template.json" <<EOF
{
  "transport": "$2",
  "nativeIo": "$3",
  "listeners": [ { "name": "public", "address": "@LISTEN@" } ],
  "admin": { "address": "@ADMIN@" },
  "clusters": [ { "id": "backend", "destinations": [ { "address": "@UPSTREAM@" } ] } ],
  "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
}
EOF
  run_fastgate_row "$1" "$TMP/$1.template.json" "$4" "$5"
}
wants fastgate-kestrel && native_row fastgate-kestrel kestrel auto "$FG_KESTREL_PORT" "$FG_KESTREL_ADMIN"
wants fastgate-native && native_row fastgate-native native epoll "$FG_NATIVE_PORT" "$FG_NATIVE_ADMIN"
wants fastgate-uring && native_row fastgate-uring native io_uring "$FG_URING_PORT" "$FG_URING_ADMIN"
i=0
for spec in "${FASTGATE_ROWS[@]}"; do
  i=$((i + 1))
  name=${spec%%=*}
  rest=${spec#*=}
  file=${rest%%;*}
  header=""
  [ "$rest" != "$file" ] && header=${rest#*;}
  run_fastgate_row "$name" "$file" $((FG_PORT + i)) $((FG_ADMIN + i)) "$header"
done

# ---- TLS rows (ROWS contains "tls", or TLS=1) -------------------------------------------------------
if wants tls; then
  TLS_DIR=$TMP/tls
  mkdir -p "$TLS_DIR"
  TLS_CERT=$TLS_DIR/cert.pem
  TLS_KEY=$TLS_DIR/key.pem
  if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -addext "basicConstraints=critical,CA:TRUE" \
      -keyout "$TLS_KEY" -out "$TLS_CERT" >"$TLS_DIR/openssl.log" 2>&1; then
    record_na "tls rows" "openssl could not make a certificate: $(tail -c 200 "$TLS_DIR/openssl.log" | tr '\n' ' ')"
  else
    tls_conf="ssl_certificate $TLS_CERT; ssl_certificate_key $TLS_KEY; ssl_protocols TLSv1.2 TLSv1.3;"
    # the TLS upstream: nginx answering the same body over https
    nginx_conf upstream-tls "    listen 127.0.0.1:$UP_TLS_PORT ssl;
    $tls_conf
    location / { default_type text/plain; return 200 '$BODY'; }"
    start_bg "$TMP/upstream-tls/out.log" "$NGINX" -p "$TMP/upstream-tls" -c "$TMP/upstream-tls/nginx.conf" -g 'daemon off;'
    UP_TLS_PID=$START_PID
    if ! wait_ready "$UP_TLS_PID" "$UPSTREAM_TLS/"; then
      record_na "upstream-tls" "the TLS upstream nginx did not start: $(tail -c 300 "$TMP/upstream-tls/logs/error.log" 2>/dev/null | tr '\n' ' ')"
      stop_row "$UP_TLS_PID"
      UP_TLS_PID=""
    fi

    # nginx terminating TLS, proxying to the plain upstream
    echo "compare: nginx+tls" >&2
    nginx_conf proxy-tls "    listen 127.0.0.1:$NGINX_TLS_PORT ssl;
    $tls_conf
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }" "upstream backend { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }"
    start_bg "$TMP/proxy-tls/out.log" "$NGINX" -p "$TMP/proxy-tls" -c "$TMP/proxy-tls/nginx.conf" -g 'daemon off;'
    pid=$START_PID
    ALLOC_URL=""
    if ! wait_ready "$pid" "https://127.0.0.1:$NGINX_TLS_PORT/"; then
      record_na nginx+tls "did not start: $(tail -c 300 "$TMP/proxy-tls/logs/error.log" "$TMP/proxy-tls/out.log" 2>/dev/null | tr '\n' ' ')"
    elif run_load nginx+tls "https://127.0.0.1:$NGINX_TLS_PORT/"; then record nginx+tls "TLS terminated by the proxy"; else record_na nginx+tls "wrk failed"; fi
    stop_row "$pid"

    [ ${#FG_CMD[@]} -eq 0 ] && fastgate_cmd
    run_fastgate_row fastgate+tls perf/configs/tls.json "$FG_TLS_PORT" "$FG_TLS_ADMIN" "" https

    # plain listener, TLS to the upstream (pooled keep-alive connections: one handshake each)
    if [ -n "${UP_TLS_PID:-}" ]; then
      echo "compare: nginx+upstream-tls" >&2
      nginx_conf proxy-uptls "    listen 127.0.0.1:$NGINX_UPTLS_PORT;
    location / {
      proxy_pass https://tlsbackend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_ssl_session_reuse on;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $TLS_CERT;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
    }" "upstream tlsbackend { server 127.0.0.1:$UP_TLS_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }"
      start_bg "$TMP/proxy-uptls/out.log" "$NGINX" -p "$TMP/proxy-uptls" -c "$TMP/proxy-uptls/nginx.conf" -g 'daemon off;'
      pid=$START_PID
      ALLOC_URL=""
      if ! wait_ready "$pid" "http://127.0.0.1:$NGINX_UPTLS_PORT/"; then
        record_na nginx+upstream-tls "did not start: $(tail -c 300 "$TMP/proxy-uptls/logs/error.log" "$TMP/proxy-uptls/out.log" 2>/dev/null | tr '\n' ' ')"
      elif run_load nginx+upstream-tls "http://127.0.0.1:$NGINX_UPTLS_PORT/"; then record nginx+upstream-tls "TLS to the upstream"; else record_na nginx+upstream-tls "wrk failed"; fi
      stop_row "$pid"
      run_fastgate_row fastgate+upstream-tls perf/configs/upstream-tls.json "$FG_UPTLS_PORT" "$FG_UPTLS_ADMIN"
      stop_row "$UP_TLS_PID"
    fi
  fi
fi

# ---- WAF rows (ROWS contains "waf"): the same CRS files behind nginx + ModSecurity v3 and behind FastGate ----
if wants waf; then
  MODSEC_MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so
  if [ ! -f "$MODSEC_MODULE" ] || [ ! -d /usr/share/modsecurity-crs/rules ] || [ ! -f /etc/modsecurity/crs/crs-setup.conf ]; then
    record_na "waf rows" "libnginx-mod-http-modsecurity and modsecurity-crs are not installed (tests/install-deps.sh)"
  else
    # the folder layout both read: crs-setup.conf + rules/ (Debian's files)
    CRS_DIR=$TMP/crs
    mkdir -p "$CRS_DIR"
    cp /etc/modsecurity/crs/crs-setup.conf "$CRS_DIR/"
    ln -sfn /usr/share/modsecurity-crs/rules "$CRS_DIR/rules"
    cat >"$TMP/modsec.conf" <<EOF
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecAuditEngine Off
Include $CRS_DIR/crs-setup.conf
SecAction "id:900000,phase:1,pass,nolog,setvar:tx.paranoia_level=1,setvar:tx.executing_paranoia_level=1"
Include $CRS_DIR/rules/*.conf
EOF
    echo "compare: nginx+waf" >&2
    nginx_conf proxy-waf "    listen 127.0.0.1:$NGINX_WAF_PORT;
    location / {
      modsecurity on;
      modsecurity_rules_file $TMP/modsec.conf;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }" "upstream backend { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }" \
      "load_module /usr/lib/nginx/modules/ndk_http_module.so; load_module $MODSEC_MODULE;"
    start_bg "$TMP/proxy-waf/out.log" "$NGINX" -p "$TMP/proxy-waf" -c "$TMP/proxy-waf/nginx.conf" -g 'daemon off;'
    pid=$START_PID
    ALLOC_URL=""
    CPU_PID=$pid
    if ! wait_ready "$pid" "http://127.0.0.1:$NGINX_WAF_PORT/"; then
      record_na nginx+waf "did not start: $(tail -c 300 "$TMP/proxy-waf/logs/error.log" "$TMP/proxy-waf/out.log" 2>/dev/null | tr '\n' ' ')"
    elif run_load nginx+waf "http://127.0.0.1:$NGINX_WAF_PORT/"; then record nginx+waf "ModSecurity v3 + CRS, PL1"; else record_na nginx+waf "wrk failed"; fi
    stop_row "$pid"

    [ ${#FG_CMD[@]} -eq 0 ] && fastgate_cmd
    cat >"$TMP/fastgate-waf.template.json" <<EOF
{
  "listeners": [ { "name": "public", "address": "@LISTEN@" } ],
  "admin": { "address": "@ADMIN@" },
  "clusters": [ { "id": "backend", "destinations": [ { "address": "@UPSTREAM@" } ] } ],
  "waf": { "profiles": [ { "id": "crs", "rules": "$CRS_DIR", "mode": "block", "paranoiaLevel": 1 } ] },
  "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend", "waf": "crs" } ]
}
EOF
    run_fastgate_row fastgate+waf "$TMP/fastgate-waf.template.json" "$FG_WAF_PORT" "$FG_WAF_ADMIN"
  fi
fi

# ---- report -----------------------------------------------------------------------------------------
nginx_rps=""
fastgate_rps="" # the plain FastGate row: the anchor of the "× fastgate" column (fastgate+X rows)
declare -A anchor_rps=() # nginx+S rows: the anchor of the X+S rows
for r in "${RESULTS[@]}"; do
  IFS='|' read -r name rps _ <<<"$r"
  [ "$name" = nginx ] && [ "$rps" != "not available" ] && nginx_rps=$rps
  [ "$name" = fastgate ] && [ "$rps" != "not available" ] && fastgate_rps=$rps
  case $name in nginx+*) [ "$rps" != "not available" ] && anchor_rps[${name#nginx+}]=$rps ;; esac
done

table() {
  echo "| row | req/s | p50 (ms) | p99 (ms) | × nginx | × fastgate | errors | bytes/request | steady B/request | proxy CPU µs/request |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  local r name rps p50 p99 errs bpr sbpr cpuus note ratio fgratio
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r name rps p50 p99 errs bpr sbpr cpuus note <<<"$r"
    ratio="-"
    local anchor=$nginx_rps
    case $name in *+*) [ -n "${anchor_rps[${name#*+}]:-}" ] && anchor=${anchor_rps[${name#*+}]} ;; esac
    if [ "$rps" != "not available" ] && [ -n "$anchor" ] && [ "$anchor" -gt 0 ]; then
      ratio=$(awk -v a="$rps" -v b="$anchor" 'BEGIN { printf "%.2f", a / b }')
    fi
    fgratio="-"
    case $name in fastgate+*)
      if [ "$rps" != "not available" ] && [ -n "$fastgate_rps" ] && [ "$fastgate_rps" -gt 0 ]; then
        fgratio=$(awk -v a="$rps" -v b="$fastgate_rps" 'BEGIN { printf "%.2f", a / b }')
      fi ;;
    esac
    echo "| $name | $rps | $p50 | $p99 | $ratio | $fgratio | $errs | $bpr | $sbpr | $cpuus |"
  done
}

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
machine="$(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr)"
now=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
TABLE=$(table)

echo
echo "$TABLE"
echo

mkdir -p perf/reports
report=perf/reports/compare-$(date -u +%Y%m%d-%H%M%S).md
{
  echo "# make compare, $now"
  echo
  echo "- Machine: $machine"
  echo "- Load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` after a $WARMUP warm-up, GET / (13-byte body), 127.0.0.1; median of $REPEAT run(s) per row"
  echo "- Load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the numbers)"
  echo "- Upstream: nginx $("$NGINX" -v 2>&1 | sed 's|.*nginx/||'), worker_processes $WORKERS, keep-alive"
  echo "- Proxies: nginx (upstream keepalive), HAProxy $("$HAPROXY" -v 2>/dev/null | awk 'NR==1 { print $3 }') (http mode, keep-alive), YARP (Yarp.ReverseProxy $(sed -n 's|.*<YarpVersion>\(.*\)</YarpVersion>.*|\1|p' Directory.Build.props), perf/baselines/YarpBaseline), FastGate: $FG_DESC"
  echo "- .NET SDK $("$DOTNET" --version 2>/dev/null); $(wrk -v 2>&1 | awk 'NR==1 { print $1, $2 }')"
  echo "- errors: non-2xx/3xx responses plus socket errors in the measured run; bytes/request: \`$ALLOC_METRIC\` (YARP: GC.GetTotalAllocatedBytes) read before and after the measured run, divided by its requests; steady B/request: the same counter and \`$REQ_METRIC\` read at 1/4 and 3/4 of the run (open connections only), less one scrape's allocation"
  echo
  echo "$TABLE"
  notes=0
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r name _ _ _ _ _ _ _ note <<<"$r"
    if [ -n "$note" ]; then
      [ $notes = 0 ] && echo && echo "Notes:"
      notes=1
      echo "- $name: $note"
    fi
  done
} >"$report"
echo "compare: report written to $report" >&2
