#!/bin/sh
# Fetch real, tagged music for the library tests: Debian game soundtracks (Ogg Vorbis with Vorbis
# comments), ~100 MB of .deb files, extracted with `dpkg-deb -x` (no installation, no root needed
# beyond what `apt-get download` needs). Idempotent: a package already extracted is skipped.
#
#   ci/fetch-music.sh [CACHE]        default CACHE: $CMIR_MUSIC_CACHE or ~/.cache/cmir_tf/music
#
# Afterwards CACHE/<package>/ holds each package's tree (usr/share/games/...); point the tests at it:
#   CMIR_MUSIC_CACHE=CACHE CMIR_REQUIRE_MUSIC=1 pytest -m slow tests/test_library_music.py
set -eu
CACHE=${1:-${CMIR_MUSIC_CACHE:-$HOME/.cache/cmir_tf/music}}
PACKAGES="singularity-music asc-music drascula-music"
mkdir -p "$CACHE/debs"
for pkg in $PACKAGES; do
    [ -f "$CACHE/$pkg/.extracted" ] && continue
    deb=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        tries=0
        # the apt lock may be held by another apt process: wait and retry
        until (cd "$CACHE/debs" && apt-get download "$pkg"); do
            tries=$((tries + 1))
            # a new machine has no package lists yet: fetch them once
            [ "$tries" -eq 1 ] && { apt-get update -qq || true; }
            [ "$tries" -ge 10 ] && { echo "error: apt-get download $pkg failed" >&2; exit 1; }
            sleep 15
        done
        deb=$(ls "$CACHE/debs/${pkg}_"*.deb | head -n 1)
    fi
    rm -rf "$CACHE/$pkg"
    dpkg-deb -x "$deb" "$CACHE/$pkg"
    touch "$CACHE/$pkg/.extracted"
done
echo "$CACHE"
