#!/usr/bin/env bash
# Installs what explaind needs on a fresh Debian machine and prints the Go
# build tags to use: "openblas" when OpenBLAS is available, nothing otherwise.
# Safe to run repeatedly; it installs only what is missing, and only as root.
#
#   scripts/setup.sh        what the demo needs (OpenBLAS, Fashion-MNIST)
#   scripts/setup.sh test   and what the tests need besides: Chromium, for
#                           the test that renders the report in a browser,
#                           and Slurm with munge, for the test that runs the
#                           job scripts of deploy/slurm on a one-node cluster
set -euo pipefail

need=()
[ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || [ -e /usr/include/openblas/cblas.h ] || need+=(libopenblas-dev)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ "${1:-}" = test ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v slurmctld >/dev/null || [ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm)
  command -v munged >/dev/null || [ -x /usr/sbin/munged ] || need+=(munge)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  else
    echo "setup: missing ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
    echo "setup: building without OpenBLAS (pure Go, slower)" >&2
  fi
fi
if [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || [ -e /usr/include/openblas/cblas.h ]; then
  echo openblas
fi
