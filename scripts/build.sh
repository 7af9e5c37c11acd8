#!/bin/sh
# Builds the Caddy binary with caddy-acs-hmac: static, reproducible paths.
# The Dockerfile and .ci/run both call this script, so CI proves the image's
# build command on every change.
#
#   scripts/build.sh [output path]    (default: bin/caddy)
set -eu
out=${1:-bin/caddy}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out" ./cmd/caddy
