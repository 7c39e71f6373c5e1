#!/usr/bin/env bash
# `make load`: builds the load-test harness and runs scenarios.
# Without FASTGATE_LOAD_TARGET it starts its own demo upstream and a gateway on perf/configs/load.json (free
# loopback ports; a route /limited whose limiter admits half the load rate; a route /jwt that needs a bearer token
# from an HS256 issuer whose secret is made per run, so the jwt scenario mints its own token) and runs
# "proxy rate-limited hostile"; with FASTGATE_LOAD_TARGET it starts nothing and sends the traffic there.
#
#   FASTGATE_LOAD_TARGET     target URL, loopback only             (default: a gateway this script starts)
#   FASTGATE_LOAD_SCENARIOS  space-separated scenario names          (default "proxy rate-limited hostile"; see --list)
#                            ("proxy hostile": hostile is then held to p99 <= 1.2x and rps >= 0.8x of proxy)
#   FASTGATE_LOAD_RATE       arrival rate per scenario, requests/s   (default 2000, at most 100000)
#   FASTGATE_LOAD_DURATION   measured time per scenario              (default 10s, at most 300s)
#   FASTGATE_LOAD_WARMUP     unmeasured warm-up per scenario         (default 2s, at most 60s)
#   FASTGATE_LOAD_CONNECTIONS  keep-alive connections                (default 32)
#   FASTGATE_LOAD_REPORT_DIR   where reports go                      (default perf/reports/<timestamp>)
#   FASTGATE_LOAD_ARGS       extra harness options, e.g. '--threshold "p99<5ms" --api-key demo-key'
#
# Exit status: 0 when every scenario met its thresholds, 1 when one did not, 2 on bad settings.
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet=${DOTNET:-dotnet}
cfg=${CONFIGURATION:-Release}
target=${FASTGATE_LOAD_TARGET:-}
scenarios=${FASTGATE_LOAD_SCENARIOS:-proxy rate-limited hostile}
rate=${FASTGATE_LOAD_RATE:-2000}
duration=${FASTGATE_LOAD_DURATION:-10s}
warmup=${FASTGATE_LOAD_WARMUP:-2s}
connections=${FASTGATE_LOAD_CONNECTIONS:-32}
report_dir=${FASTGATE_LOAD_REPORT_DIR:-perf/reports/$(date +%Y%m%d-%H%M%S)}

# Bounds: this script is for a laptop-sized box, not a soak test.
seconds() { # 500ms | 10s | 2m | 10 -> whole seconds (rounded up)
  local v=$1
  case "$v" in
    *ms) echo $(( (${v%ms} + 999) / 1000 )) ;;
    *s) echo "${v%s}" ;;
    *m) echo $(( ${v%m} * 60 )) ;;
    *) echo "$v" ;;
  esac
}
[[ "$rate" =~ ^[0-9]+$ ]] && (( rate >= 1 && rate <= 100000 )) || { echo "FASTGATE_LOAD_RATE must be 1..100000 (got '$rate')" >&2; exit 2; }
d=$(seconds "$duration"); w=$(seconds "$warmup")
[[ "$d" =~ ^[0-9]+$ ]] && (( d >= 1 && d <= 300 )) || { echo "FASTGATE_LOAD_DURATION must be 1s..300s (got '$duration')" >&2; exit 2; }
[[ "$w" =~ ^[0-9]+$ ]] && (( w <= 60 )) || { echo "FASTGATE_LOAD_WARMUP must be at most 60s (got '$warmup')" >&2; exit 2; }

# No target: start the demo upstream and a gateway of our own, stopped on exit.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${work:-}"; }
trap cleanup EXIT INT TERM
if [ -z "$target" ]; then
  free_port() { # a random port in 20000-59999 that nothing on 127.0.0.1 answers on (bash only, no python needed)
    local p
    while true; do
      p=$(( 20000 + RANDOM % 40000 ))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
  }
  up=$(free_port); gw=$(free_port); adm=$(free_port)
  $dotnet build src/FastGate.Server/FastGate.Server.csproj -c "$cfg" -v quiet -nologo
  $dotnet build src/FastGate.DemoUpstream/FastGate.DemoUpstream.csproj -c "$cfg" -v quiet -nologo
  work=$(mktemp -d)
  jwt_secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  sed -e "s/@JWT_SECRET@/$jwt_secret/" -e "s/@LISTEN@/127.0.0.1:$gw/" -e "s/@ADMIN@/127.0.0.1:$adm/" -e "s#@UPSTREAM@#http://127.0.0.1:$up#" \
      -e "s/@HALF_RATE@/$(( rate / 2 > 0 ? rate / 2 : 1 ))/" perf/configs/load.json > "$work/load.json"
  $dotnet src/FastGate.DemoUpstream/bin/$cfg/net10.0/FastGate.DemoUpstream.dll "http://127.0.0.1:$up" > "$work/upstream.log" 2>&1 & pids+=($!)
  $dotnet src/FastGate.Server/bin/$cfg/net10.0/fastgate.dll run --config "$work/load.json" --log-level warning > "$work/gateway.log" 2>&1 & pids+=($!)
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$gw/hello" 2>/dev/null && break; sleep 0.1; done
  target="http://127.0.0.1:$gw/"
  FASTGATE_LOAD_ARGS="${FASTGATE_LOAD_ARGS:-}"
  started_gateway=1
fi

# Loopback only (the harness refuses anything else too), and something must be listening.
hostport=${target#*://}; hostport=${hostport%%/*}
case "$hostport" in
  \[*\]:*) host=${hostport%]:*}; host=${host#[}; port=${hostport##*]:} ;;
  \[*\]) host=${hostport#[}; host=${host%]}; port=80 ;;
  *:*) host=${hostport%:*}; port=${hostport##*:} ;;
  *) host=$hostport; port=80 ;;
esac
case "$host" in
  127.*|::1|localhost) ;;
  *) echo "refusing FASTGATE_LOAD_TARGET=$target: load tests only target loopback addresses" >&2; exit 2 ;;
esac
[ "$host" = localhost ] && host=127.0.0.1
if ! timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
  echo "nothing listens on $target: start the gateway first (make run) or set FASTGATE_LOAD_TARGET" >&2
  exit 2
fi

$dotnet build perf/FastGate.LoadTest/FastGate.LoadTest.csproj -c "$cfg" -v quiet -nologo
dll=perf/FastGate.LoadTest/bin/$cfg/net10.0/fastgate-load.dll

extra=()
if [ -n "${FASTGATE_LOAD_ARGS:-}" ]; then eval "extra=(${FASTGATE_LOAD_ARGS})"; fi

failed=()
for s in $scenarios; do
  echo "== $s: $rate rps for $duration (warm-up $warmup) against $target"
  rel=()
  # hostile: the good traffic must stay within 20% of the plain proxy run (when proxy ran first, in this directory).
  if [ "$s" = hostile ] && [ -f "$report_dir/proxy-summary.csv" ]; then
    rel=(--baseline "$report_dir/proxy-summary.csv" --threshold "p99<=1.2x" --threshold "rps>=0.8x")
  fi
  # Against our own gateway, rate-limited goes to the route whose limiter admits half the rate.
  path=()
  if [ "$s" = rate-limited ] && [ -n "${started_gateway:-}" ]; then path=(--path /limited/hello); fi
  if [ "$s" = jwt ] && [ -n "${started_gateway:-}" ]; then path=(--path /jwt/hello --jwt-secret "$jwt_secret"); fi
  if [ "$s" != rate-limited ] && [ "$s" != jwt ] && [ -n "${started_gateway:-}" ]; then path=(--path /hello); fi
  rc=0
  $dotnet "$dll" --target "$target" --scenario "$s" --rate "$rate" --duration "$duration" --warmup "$warmup" \
    --connections "$connections" --report-dir "$report_dir" "${path[@]}" "${rel[@]}" "${extra[@]}" || rc=$?
  if [ "$rc" -eq 2 ]; then exit 2; fi
  [ "$rc" -eq 0 ] || failed+=("$s")
done

echo "reports in $report_dir"
if [ ${#failed[@]} -gt 0 ]; then
  echo "thresholds breached in: ${failed[*]}" >&2
  exit 1
fi
echo "all scenarios met their thresholds"
