#!/usr/bin/env bash
# `make publish`: a Native AOT binary artifacts/linux-x64/fastgate and a self-contained single-file
# artifacts/win-x64/fastgate.exe. Installs the native toolchain that Native AOT needs when missing.
# The SDK picks the ILCompiler version itself; it is named nowhere in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."

DOTNET=${DOTNET:-dotnet}
CONFIGURATION=${CONFIGURATION:-Release}
PROJECT=src/FastGate.Server
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# Native AOT links with clang and needs zlib's static library.
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "publish: Native AOT needs ${need[*]}; install them (as root) first" >&2
    exit 1
  fi
  echo "publish: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  log=$(mktemp)
  if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
fi

echo "== linux-x64 (Native AOT) -> artifacts/linux-x64"
rm -rf artifacts/linux-x64
"$DOTNET" publish "$PROJECT" -c "$CONFIGURATION" -r linux-x64 -p:PublishAot=true -o artifacts/linux-x64

echo "== win-x64 (self-contained single file) -> artifacts/win-x64"
rm -rf artifacts/win-x64
"$DOTNET" publish "$PROJECT" -c "$CONFIGURATION" -r win-x64 --self-contained -p:PublishSingleFile=true -o artifacts/win-x64

# The Linux binary must at least start.
if ! out=$(timeout 10 artifacts/linux-x64/fastgate version 2>&1); then
  echo "publish: warning: 'artifacts/linux-x64/fastgate version' failed: $out" >&2
fi
ls -la artifacts/linux-x64/fastgate artifacts/win-x64/fastgate.exe
