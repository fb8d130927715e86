#!/usr/bin/env bash
# The side-by-side load benchmark: anteroom vs plain Pingora vs nginx.
#
#   benches/load/run.sh            # the full run (about 10 minutes), results in benches/load/out/
#   benches/load/run.sh --smoke    # 1 round of 1 s: proves the harness works
#
# Installs what is missing (nginx, wrk, redis-server, openssl) on Debian/Ubuntu,
# builds release binaries unless --bin-dir is given, then runs harness.py
# (options: benches/load/run.sh --help).
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
command -v wrk >/dev/null || packages+=(wrk)
command -v h2load >/dev/null || packages+=(nghttp2-client)   # benches/load/http2.py
command -v redis-server >/dev/null || packages+=(redis-server)
command -v openssl >/dev/null || packages+=(openssl)
command -v taskset >/dev/null || packages+=(util-linux)
if ((${#packages[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "benches/load: installing ${packages[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

if [[ " $* " != *" --bin-dir "* ]]; then
  cargo build --release --quiet --bin anteroom --example plain-pingora
fi
exec python3 benches/load/harness.py "$@"
