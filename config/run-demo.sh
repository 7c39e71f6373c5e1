#!/usr/bin/env bash
# `make run`: the demo upstream on 127.0.0.1:9001 and the gateway on 127.0.0.1:8080; Ctrl-C stops both.
# Each is waited for (at most 20 s) and checked before the next step: the script stops with a clear message when the
# demo upstream's port is taken, when the demo upstream does not answer there (it crashed or bound elsewhere), or
# when the gateway does not start.
set -u
dotnet=$1; server=$2; demo=$3
config=${FASTGATE_CONFIG:-config/fastgate.json}
demo_host=127.0.0.1; demo_port=9001   # the destination in config/fastgate.json
gw_url=http://127.0.0.1:8080
demo_pid=; gw_pid=

fail() { echo "make run: $*" >&2; [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null; exit 1; }
stop() { kill -TERM $gw_pid $demo_pid 2>/dev/null; wait $gw_pid $demo_pid 2>/dev/null; exit 0; }
trap stop INT TERM
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if listening "$demo_host" "$demo_port"; then
  fail "$demo_host:$demo_port is already in use (another make run?): stop what listens there first"
fi
"$dotnet" "$demo" "http://$demo_host:$demo_port" & demo_pid=$!
deadline=$((SECONDS + 20))
until curl -fsS --max-time 2 "http://$demo_host:$demo_port/" 2>/dev/null | grep -q "FastGate demo upstream"; do
  kill -0 "$demo_pid" 2>/dev/null || { demo_pid=; fail "the demo upstream exited before answering on $demo_host:$demo_port (see its output above)"; }
  [ "$SECONDS" -lt "$deadline" ] || fail "the demo upstream did not answer on $demo_host:$demo_port within 20 s"
  sleep 0.1
done

"$dotnet" "$server" run --config "$config" & gw_pid=$!
deadline=$((SECONDS + 20))
until curl -fsS --max-time 2 -o /dev/null "$gw_url/" 2>/dev/null; do
  kill -0 "$gw_pid" 2>/dev/null || { gw_pid=; fail "the gateway did not start (see above)"; }
  [ "$SECONDS" -lt "$deadline" ] || fail "the gateway did not answer on $gw_url within 20 s"
  sleep 0.1
done
cat <<MSG

FastGate is running. Try:
  curl -i $gw_url/hello
  curl -s http://127.0.0.1:9901/metrics | grep fastgate_
Ctrl-C stops the gateway and the demo upstream.
MSG
wait "$gw_pid"
kill "$demo_pid" 2>/dev/null
