#!/usr/bin/env bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$AISHIP_ROOT/local/kubernetes/build.sh"
case "${1:-}" in build) k8s_build; k8s_bin_dir ;; esac
