#!/usr/bin/env bash
# Issue 14's isolation check: does a slow cluster raise the p99 of a healthy route on the same gateway?
# Starts the demo upstream and a gateway on perf/configs/slow-cluster.json (route /fast -> cluster "fast", route
# /slow -> cluster "slow" with circuitBreaker.maxConcurrentRequests 32, both on the same upstream), then runs the
# load harness (open model) twice against /fast/hello: alone (the baseline), and while a second harness sends
# /slow/delay/2000 (every response 2 s late). The second /fast run must keep p99 <= 1.2x the baseline's.
#   RATE=2000 SLOW_RATE=200 DURATION=10s CONNECTIONS=32   (bounded: at most 20000 rps and 60 s)
# Loopback only; every process started here is stopped on exit. Exit status: 0 held, 1 breached, 2 setup failed.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet=${DOTNET:-dotnet}
cfg=${CONFIGURATION:-Release}
rate=${RATE:-2000}; slow_rate=${SLOW_RATE:-200}; duration=${DURATION:-10s}; connections=${CONNECTIONS:-32}
[[ "$rate" =~ ^[0-9]+$ ]] && (( rate >= 1 && rate <= 20000 )) || { echo "RATE must be 1..20000" >&2; exit 2; }
[[ "$slow_rate" =~ ^[0-9]+$ ]] && (( slow_rate >= 1 && slow_rate <= 2000 )) || { echo "SLOW_RATE must be 1..2000" >&2; exit 2; }
[[ "$duration" =~ ^([1-9]|[1-5][0-9]|60)s$ ]] || { echo "DURATION must be 1s..60s" >&2; exit 2; }
secs=${duration%s}
report=perf/reports/slow-cluster-$(date +%Y%m%d-%H%M%S)
mkdir -p "$report"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${work:-}"; }
trap cleanup EXIT INT TERM
free_port() { local p; while true; do p=$(( 20000 + RANDOM % 40000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
up=$(free_port); gw=$(free_port); adm=$(free_port)
$dotnet build src/FastGate.Server/FastGate.Server.csproj -c "$cfg" -v quiet -nologo >/dev/null
$dotnet build src/FastGate.DemoUpstream/FastGate.DemoUpstream.csproj -c "$cfg" -v quiet -nologo >/dev/null
$dotnet build perf/FastGate.LoadTest/FastGate.LoadTest.csproj -c "$cfg" -v quiet -nologo >/dev/null
work=$(mktemp -d)
sed -e "s/@LISTEN@/127.0.0.1:$gw/" -e "s/@ADMIN@/127.0.0.1:$adm/" -e "s#@UPSTREAM@#http://127.0.0.1:$up#" perf/configs/slow-cluster.json > "$work/gateway.json"
$dotnet src/FastGate.DemoUpstream/bin/$cfg/net10.0/FastGate.DemoUpstream.dll "http://127.0.0.1:$up" > "$work/upstream.log" 2>&1 & pids+=($!)
$dotnet src/FastGate.Server/bin/$cfg/net10.0/fastgate.dll run --config "$work/gateway.json" --log-level warning > "$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$gw/fast/hello" 2>/dev/null && break; sleep 0.1; done
curl -fs -o /dev/null "http://127.0.0.1:$gw/fast/hello" || { echo "the gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 2; }
load="$dotnet perf/FastGate.LoadTest/bin/$cfg/net10.0/fastgate-load.dll --target http://127.0.0.1:$gw/ --scenario proxy --quiet"

echo "== baseline: /fast/hello at $rate rps for $duration, alone"
$load --path /fast/hello --rate "$rate" --duration "$duration" --warmup 2s --connections "$connections" --report-dir "$report/alone" || true

echo "== /fast/hello at $rate rps while /slow/delay/2000 gets $slow_rate rps (circuit breaker: 32 in flight)"
$load --path /slow/delay/2000 --rate "$slow_rate" --duration "$((secs + 4))s" --warmup 0s --connections 256 --timeout 5s \
  --no-default-thresholds --report-dir "$report/slow" > "$work/slow.log" 2>&1 & slow=$!; pids+=($slow)
sleep 2 # the slow cluster is saturated before the measured run starts
rc=0
$load --path /fast/hello --rate "$rate" --duration "$duration" --warmup 0s --connections "$connections" --report-dir "$report/beside-slow" \
  --baseline "$report/alone/proxy-summary.csv" --threshold "p99<=1.2x" || rc=$?
wait "$slow" || true
tail -n 15 "$work/slow.log"
curl -fs "http://127.0.0.1:$adm/metrics" | grep -E '^fastgate_circuit_breaker_rejections_total' || true
echo "reports in $report"
exit $rc
