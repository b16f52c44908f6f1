#!/usr/bin/env bash
# Fetch the offline assets of the benchmark builder into .cache/assets/ (used by
# `make setup`). Idempotent and best effort:
#   * npm  @upscalerjs/default-model@1.0.0 -> .cache/assets/upscalerjs-default-model/package
#     (ESRGAN-slim x2 weights; exit status 1 if it cannot be fetched);
#   * apt  opencv-doc, lomiri-wallpapers-16.04, mate-backgrounds, palapeli-data,
#     plasma-workspace-wallpapers (94 MB; 11 of its wallpapers are photographs)
#     -> .cache/assets/debian/<pkg>/ (optional real photos; never fails the setup).
# Override the destination with ASSETS_DIR=/some/dir.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="${ASSETS_DIR:-$ROOT/.cache/assets}"
NPM_SPEC="@upscalerjs/default-model@1.0.0"
DEBIAN_PKGS=(opencv-doc lomiri-wallpapers-16.04 mate-backgrounds palapeli-data plasma-workspace-wallpapers)

log() { printf 'fetch_assets: %s\n' "$*" >&2; }

fetch_upscalerjs() {
    local dest="$ASSETS/upscalerjs-default-model"
    if [[ -f "$dest/package/models/model.json" ]]; then
        log "present: $dest/package"
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found: cannot fetch $NPM_SPEC (ESRGAN tests and family will be skipped)"
        return 1
    fi
    local tgz
    if ! tgz="$(cd "$ASSETS" && npm pack --silent "$NPM_SPEC" | tail -n 1)" || [[ -z "$tgz" ]]; then
        log "npm pack $NPM_SPEC failed"
        return 1
    fi
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    if ! tar -xzf "$ASSETS/$tgz" -C "$dest.tmp"; then
        log "cannot unpack $ASSETS/$tgz"
        return 1
    fi
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    log "fetched $NPM_SPEC -> $dest/package"
}

apt_download() {
    # apt_download PKG DIR: download PKG's .deb into DIR; 0 on success.
    (cd "$2" && apt-get download -q "$1" >/dev/null 2>&1)
}

extract_deb() {
    # extract_deb PKG DEBDIR DESTDIR: dpkg-deb -R (files + DEBIAN/control), atomically.
    local deb
    deb="$(ls "$2/$1"_*.deb 2>/dev/null | head -n 1)"
    [[ -n "$deb" ]] || return 1
    rm -rf "$3.tmp"
    dpkg-deb -R "$deb" "$3.tmp" || return 1
    rm -rf "$3" && mv "$3.tmp" "$3" && rm -f "$deb"
}

fetch_debian() {
    local root="$ASSETS/debian" updated=0 pkg
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
        log "apt-get/dpkg-deb unavailable: skipping optional Debian photos"
        return 0
    fi
    mkdir -p "$root/debs"
    for pkg in "${DEBIAN_PKGS[@]}"; do
        if [[ -f "$root/$pkg/DEBIAN/control" ]]; then
            log "present: $root/$pkg"
            continue
        fi
        if ! apt_download "$pkg" "$root/debs" && [[ $updated -eq 0 ]]; then
            updated=1
            log "apt-get download $pkg failed; running apt-get update once"
            apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed"
            apt_download "$pkg" "$root/debs" || true
        fi
        if extract_deb "$pkg" "$root/debs" "$root/$pkg"; then
            log "fetched $pkg -> $root/$pkg"
        else
            log "skipping optional Debian package $pkg (download or extraction failed)"
        fi
    done
    rmdir "$root/debs" 2>/dev/null || true
    return 0
}

mkdir -p "$ASSETS"
status=0
fetch_upscalerjs || status=1
fetch_debian || true
exit "$status"
