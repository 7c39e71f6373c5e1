#!/usr/bin/env bash
# Issue 15's AI measurements, rerunnable: starts a gateway on perf/configs/ai.json (one AI route; alias "fo" over two
# OpenAI-compatible fake providers a and b, "oa" on provider c, "an" on the Anthropic-format provider d), then runs
# `fastgate-load ai`, which starts the four fake providers on 127.0.0.1 (the real wire formats: JSON and chunked SSE)
# and measures, in one run:
#   1. time to the first content event, client -> provider directly vs client -> gateway -> the same provider
#      (OpenAI-compatible, Anthropic Messages translated to OpenAI chunks, and OpenAI-compatible over TLS: provider t,
#      a self-signed certificate made here with openssl, the gateway trusting it by tls.ca), alternating, one client;
#   2. the gateway's allocated bytes (dotnet_gc_allocated_bytes_total on its admin /metrics, read around each stream,
#      median of ALLOC_REQUESTS streams) per relayed SSE event: streams of EVENTS events against streams of 10, the
#      difference over the extra events; unpaced (the provider writes as fast as it can) and paced (200 events, a 1 ms
#      pause before each, as a live model streams: every read of the gateway waits for the network);
#   3. provider a killed (listener and every connection closed) half-way through DURATION of closed-loop load on "fo":
#      requests failed before streaming, streams cut mid-way, time to first event before/after the kill;
#   4. the failover latency itself: route /aik tries provider k first on every call (its port closed: a killed
#      provider; cooldown 1ms), then c; time to first event against /ai (c directly), alternating.
# Bounded: DURATION <= 120 s, every request times out after 30 s; loopback only; every process started here is stopped.
#   DURATION=10s CONCURRENCY=16 LATENCY_REQUESTS=1000 ALLOC_REQUESTS=10 EVENTS=2000 CONNECT_TIMEOUT=5s
#   WARMUP (pairs before the time-to-first-event phase, default 4000: a fresh JIT gateway tiers its code for thousands of calls)
#   PHASES (default latency,alloc,kill,failover: any of them, comma-separated, e.g. PHASES=latency)
#   FASTGATE: the command that runs the gateway (default: dotnet src/FastGate.Server/bin/Release/net10.0/fastgate.dll)
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet=${DOTNET:-dotnet}
duration=${DURATION:-10s}; concurrency=${CONCURRENCY:-16}; latency=${LATENCY_REQUESTS:-1000}
alloc=${ALLOC_REQUESTS:-10}; events=${EVENTS:-2000}; connect_timeout=${CONNECT_TIMEOUT:-5s}
[[ "$duration" =~ ^([1-9]|[1-9][0-9]|1[01][0-9]|120)s$ ]] || { echo "DURATION must be 1s..120s" >&2; exit 2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${work:-}"; }
trap cleanup EXIT INT TERM
free_port() { local p; while true; do p=$(( 20000 + RANDOM % 40000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
gw=$(free_port); adm=$(free_port); pa=$(free_port); pb=$(free_port); pc=$(free_port); pd=$(free_port); pe=$(free_port); pt=$(free_port)
$dotnet build src/FastGate.Server/FastGate.Server.csproj -c Release -v quiet -nologo >/dev/null
$dotnet build perf/FastGate.LoadTest/FastGate.LoadTest.csproj -c Release -v quiet -nologo >/dev/null
work=$(mktemp -d)
# provider t speaks TLS: a self-signed certificate for 127.0.0.1, the gateway's tls.ca for that provider
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=fake-llm" \
  -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:TRUE" \
  -keyout "$work/t.key" -out "$work/t.pem" >/dev/null 2>&1 || { echo "openssl could not make provider t's certificate" >&2; exit 2; }
sed -e "s|@PORT_T@|$pt|" -e "s|@CA_T@|$work/t.pem|" -e "s/@LISTEN@/127.0.0.1:$gw/" -e "s/@ADMIN@/127.0.0.1:$adm/" -e "s/@PORT_A@/$pa/" -e "s/@PORT_B@/$pb/" -e "s/@PORT_C@/$pc/" \
    -e "s/@PORT_D@/$pd/" -e "s/@PORT_E@/$pe/" -e "s/@CONNECT_TIMEOUT@/$connect_timeout/" perf/configs/ai.json > "$work/ai.json"
read -r -a fg <<<"${FASTGATE:-$dotnet src/FastGate.Server/bin/Release/net10.0/fastgate.dll}"
"${fg[@]}" run --config "$work/ai.json" --log-level warning > "$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$adm/metrics" 2>/dev/null && break; sleep 0.1; done
curl -fs -o /dev/null "http://127.0.0.1:$adm/metrics" || { echo "the gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 2; }
mkdir -p perf/reports
report=perf/reports/ai-$(date -u +%Y%m%d-%H%M%S).md
timeout 600 $dotnet perf/FastGate.LoadTest/bin/Release/net10.0/fastgate-load.dll ai --gateway "http://127.0.0.1:$gw/ai" --admin "http://127.0.0.1:$adm" \
  --ports "$pa,$pb,$pc,$pd,$pe" --duration "$duration" --concurrency "$concurrency" --latency-requests "$latency" --alloc-requests "$alloc" \
  --events "$events" --report "$report" --tls-port "$pt" --tls-cert "$work/t.pem" --tls-key "$work/t.key" ${WARMUP:+--warmup "$WARMUP"} ${PHASES:+--phases "$PHASES"}
{ echo; echo "- Gateway: ${fg[*]}, connectTimeout $connect_timeout, cooldown 30s; .NET SDK $($dotnet --version)"; } >> "$report"
