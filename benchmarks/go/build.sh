#!/bin/sh
# Build the Go net/rpc peers into benchmarks/go/bin/ (server, client).
# Standard library only: no module download is needed or allowed.
set -eu
cd "$(dirname "$0")"
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOWORK=off GOSUMDB=off
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then
    export GOCACHE="${TMPDIR:-/tmp}/fastrpcbench-gocache"
fi
go build -o bin/ ./...
