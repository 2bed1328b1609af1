#!/usr/bin/env bash
# Installs the Debian 12 packages the build, the tests and the demo need (as root), if missing.
set -euo pipefail
packages=(meson ninja-build pkg-config g++ libboost-dev libopenblas-dev libmsgpack-cxx-dev
          nlohmann-json3-dev libzstd-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
          libxxhash-dev libzip-dev libpcre2-dev libicu-dev libsentencepiece-dev python3 curl
          openssl stunnel4 ca-certificates)  # TLS: certificates made by the tests, S3 behind a TLS terminator
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
