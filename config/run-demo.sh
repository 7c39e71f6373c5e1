#!/usr/bin/env bash
# `make run`: the demo upstream on 127.0.0.1:9001 and the gateway on 127.0.0.1:8080; Ctrl-C stops both.
set -u
dotnet=$1; server=$2; demo=$3
config=${FASTGATE_CONFIG:-config/fastgate.json}
"$dotnet" "$demo" http://127.0.0.1:9001 & demo_pid=$!
"$dotnet" "$server" run --config "$config" & gw_pid=$!
stop() { kill -TERM "$gw_pid" "$demo_pid" 2>/dev/null; wait "$gw_pid" "$demo_pid" 2>/dev/null; exit 0; }
trap stop INT TERM
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null http://127.0.0.1:8080/ 2>/dev/null; then break; fi
  kill -0 "$gw_pid" 2>/dev/null || { echo "the gateway did not start (see above)"; kill "$demo_pid" 2>/dev/null; exit 1; }
  sleep 0.1
done
cat <<MSG

FastGate is running. Try:
  curl -i http://127.0.0.1:8080/hello
  curl -s http://127.0.0.1:9901/metrics | grep fastgate_
Ctrl-C stops the gateway and the demo upstream.
MSG
wait "$gw_pid"
kill "$demo_pid" 2>/dev/null
