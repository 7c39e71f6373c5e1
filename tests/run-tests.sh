#!/usr/bin/env bash
# Runs every test project and closes with one plain summary line: "tests: N passed, N failed".
set -uo pipefail
cfg=${1:-Release}
out=$(mktemp -d)
dotnet build FastGate.sln -c "$cfg" || exit 1
dotnet test FastGate.sln -c "$cfg" --no-build --logger "trx;LogFilePrefix=r" --results-directory "$out" \
  --logger "console;verbosity=normal" 2>&1 | tee "$out/console.log" | grep -vE '^\s+Passed ' 
rc=${PIPESTATUS[0]}
# The transport matrix (issue 13): the main pass runs every gateway on the default transport (auto: on Linux, the
# native transport on io_uring where the kernel has it); the proxy-facing namespaces run a second time on Kestrel's
# transport (FASTGATE_TEST_TRANSPORT=kestrel: the transport of other platforms, and of "transport": "kestrel") and a
# third time on the native epoll loops. The whole suite passes on each (FASTGATE_TEST_TRANSPORT=... dotnet test ...);
# these namespaces keep the added time small.
if [ "$(uname -s)" = Linux ]; then
  FASTGATE_TEST_TRANSPORT=kestrel dotnet test tests/FastGate.Tests -c "$cfg" --no-build --logger "trx;LogFilePrefix=kestrel" --results-directory "$out" \
    --filter "FullyQualifiedName~FastGate.Tests.Proxy|FullyQualifiedName~FastGate.Tests.Http|FullyQualifiedName~FastGate.Tests.Hosting|FullyQualifiedName~FastGate.Tests.Security" \
    --logger "console;verbosity=normal" 2>&1 | tee -a "$out/console.log" | grep -vE '^\s+Passed '
  native_rc=${PIPESTATUS[0]}
  [ "$native_rc" -eq 0 ] || rc=$native_rc
  # The native transport waits on io_uring where the kernel has it ("nativeIo": "auto"): the same namespaces once
  # more on its epoll loops (the fallback, and "nativeIo": "epoll").
  FASTGATE_TEST_TRANSPORT=native FASTGATE_TEST_NATIVE_IO=epoll dotnet test tests/FastGate.Tests -c "$cfg" --no-build --logger "trx;LogFilePrefix=epoll" --results-directory "$out" \
    --filter "FullyQualifiedName~FastGate.Tests.Proxy|FullyQualifiedName~FastGate.Tests.Http|FullyQualifiedName~FastGate.Tests.Hosting|FullyQualifiedName~FastGate.Tests.Security" \
    --logger "console;verbosity=normal" 2>&1 | tee -a "$out/console.log" | grep -vE '^\s+Passed '
  epoll_rc=${PIPESTATUS[0]}
  [ "$epoll_rc" -eq 0 ] || rc=$epoll_rc
fi
passed=0; failed=0; skipped=0
for f in "$out"/*.trx; do
  [ -f "$f" ] || continue
  c=$(grep -o '<Counters [^>]*>' "$f")
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$c"); fl=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$c")
  passed=$((passed + ${p:-0})); failed=$((failed + ${fl:-0}))
done
# the failed tests once more, by name and message, right above the summary line (the end of a CI log is what is read)
if [ "$failed" -gt 0 ]; then
  for f in "$out"/*.trx; do
    [ -f "$f" ] || continue
    awk -v run="$(basename "$f" .trx)" '
      /<UnitTestResult / && /outcome="Failed"/ { match($0, /testName="[^"]*"/); name = substr($0, RSTART + 10, RLENGTH - 11); inside = 1 }
      inside && /<Message>/ { msg = $0; sub(/.*<Message>/, "", msg); lines = 1; if (msg ~ /<\/Message>/) { done_msg() } else { collecting = 1 }; next }
      collecting { msg = msg " | " $0; lines++; if ($0 ~ /<\/Message>/ || lines >= 4) done_msg() }
      function done_msg() { sub(/<\/Message>.*/, "", msg); printf "FAILED %s (%s): %s\n", name, run, substr(msg, 1, 400); inside = 0; collecting = 0 }
    ' "$f"
  done
fi
[ "$passed" -gt 0 ] || { echo "no test ran"; rc=1; }
echo "tests: $passed passed, $failed failed"
exit $rc
