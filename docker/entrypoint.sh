#!/bin/sh
# Entrypoint of the cobrowse image (docker/Dockerfile), started by tini:
#   no arguments, or "serve ..."   run the server: cobrowse serve ...
#   "--some-flag ..."              the same with "serve" put in front (docker run IMAGE --max-sessions 3)
#   anything else                  run that command instead (docker run -it IMAGE bash)
# Every path ends in exec, so tini's SIGTERM reaches cobrowse itself, which ends every session,
# closes every Chromium and exits 0.
# Tested without Docker by docker/test-entrypoint.sh.
set -eu

me=cobrowse-entrypoint

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- serve "$@"
fi
if [ "$1" != serve ]; then
    exec "$@"
fi

# Docker's default /dev/shm is 64 MiB. cobrowse passes --disable-dev-shm-usage to Chromium, so a
# small one works, only slower: warn, do not stop.
shm_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $2 }') || shm_kib=
case $shm_kib in
    '' | *[!0-9]*) ;;
    *)
        if [ "$shm_kib" -lt 262144 ]; then
            echo "$me: warning: /dev/shm is $((shm_kib / 1024)) MiB, less than 256 MiB: give the container more (docker run --shm-size=1g, compose shm_size: 1gb)" >&2
        fi
        ;;
esac

# Without --chromium or COBROWSE_CHROMIUM, cobrowse looks these names up on PATH (src/config.rs).
chromium=${COBROWSE_CHROMIUM:-}
for arg in "$@"; do
    case $arg in
        --chromium | --chromium=*) chromium=given ;;
    esac
done
if [ -z "$chromium" ]; then
    for name in chromium chromium-browser google-chrome-stable google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            chromium=$name
            break
        fi
    done
fi
if [ -z "$chromium" ]; then
    echo "$me: no Chromium on PATH ($PATH): install Debian's chromium package or set COBROWSE_CHROMIUM" >&2
    exit 64
fi

# As root cobrowse turns Chromium's sandbox off; as any other user the sandbox needs user (and
# PID and network) namespaces, which Docker's default seccomp profile refuses. Sessions would
# then fail to start, so say why now (docker/README.md, "Chromium's sandbox").
if [ "$(id -u)" != 0 ] && command -v unshare >/dev/null 2>&1 &&
    ! unshare --user --pid --net --fork true >/dev/null 2>&1; then
    echo "$me: warning: cannot create user namespaces, so Chromium's sandbox cannot start and every session will fail: run with --security-opt seccomp=unconfined (see docker/README.md)" >&2
fi

exec cobrowse "$@"
