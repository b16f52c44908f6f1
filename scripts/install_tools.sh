#!/usr/bin/env bash
# System tools the deploy/observability tests run (used by `make setup`):
#   * prometheus + promtool from Debian's `prometheus` package (rule checks, real scrape);
#   * kubectl with its built-in kustomize (manifest rendering): not installable from
#     Debian, so only checked here.
# Installs with apt-get when root (or passwordless sudo) is available; otherwise says
# what is missing. The tests themselves fail with the same hint if a tool is absent.
set -uo pipefail

log() { printf 'install_tools: %s\n' "$*" >&2; }

apt_install() {
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            log "not root and no passwordless sudo: install Debian package(s) $* yourself"
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
        || { $sudo apt-get update >/dev/null 2>&1 \
             && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; }
}

status=0
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    log "present: $(prometheus --version 2>&1 | head -n 1)"
elif command -v apt-get >/dev/null 2>&1 && apt_install prometheus; then
    log "installed: $(prometheus --version 2>&1 | head -n 1)"
else
    log "could not install Debian's prometheus package (promtool + prometheus)"
    status=1
fi

if command -v kubectl >/dev/null 2>&1; then
    log "present: kubectl $(kubectl version --client 2>/dev/null | head -n 1)"
else
    log "kubectl not found: the manifest tests need kubectl (built-in kustomize)"
    status=1
fi
exit $status
