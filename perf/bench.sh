#!/usr/bin/env bash
# `make bench`: BenchmarkDotNet micro-benchmarks (perf/FastGate.Benchmarks) in Release with a short job.
#   FILTER   benchmark filter (default '*'), e.g. FILTER='*Parser*' make bench
#   JOB      BenchmarkDotNet job (default short); arguments after `bash perf/bench.sh` are passed through.
# Results (Markdown, CSV, HTML, logs) go to perf/reports/bench-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."

DOTNET=${DOTNET:-dotnet}
FILTER=${FILTER:-*}
JOB=${JOB:-short}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

out="perf/reports/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

"$DOTNET" run -c Release --project perf/FastGate.Benchmarks -- \
  --filter "$FILTER" --job "$JOB" --artifacts "$out" "$@"

echo "bench: results in $out/results" >&2
