#!/bin/sh
# Tests docker/entrypoint.sh without Docker: it runs against a PATH of fakes in a temp directory
# (cobrowse, chromium, df, id, unshare) and links to the few real tools it needs.
# Usage: sh docker/test-entrypoint.sh. Last line: "N passed, N failed"; exits 1 on any failure.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
entry=$here/entrypoint.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT HUP INT TERM
passed=0
failed=0

# bin/: everything on PATH. nochromium/: the same without a Chromium.
mkdir "$tmp/bin" "$tmp/nochromium"
for tool in sh awk echo; do
    real=
    for dir in /usr/bin /bin; do
        if [ -x "$dir/$tool" ]; then
            real=$dir/$tool
            break
        fi
    done
    [ -n "$real" ] || { echo "test-entrypoint: no $tool in /usr/bin or /bin" >&2; exit 1; }
    ln -s "$real" "$tmp/bin/$tool"
    ln -s "$real" "$tmp/nochromium/$tool"
done
cat >"$tmp/bin/cobrowse" <<'EOF'
#!/bin/sh
# Prints its PID (the entrypoint's, if the entrypoint exec'd) and its argv, one [arg] each.
printf 'pid=%s argv=' "$$"
printf '[%s]' "$@"
printf '\n'
EOF
cat >"$tmp/bin/chromium" <<'EOF'
#!/bin/sh
exit 0
EOF
cat >"$tmp/bin/df" <<'EOF'
#!/bin/sh
echo 'Filesystem     1024-blocks  Used Available Capacity Mounted on'
echo "shm            ${FAKE_SHM_KIB:-1048576}     0  ${FAKE_SHM_KIB:-1048576}       0% /dev/shm"
EOF
cat >"$tmp/bin/id" <<'EOF'
#!/bin/sh
echo "${FAKE_UID:-0}"
EOF
cat >"$tmp/bin/unshare" <<'EOF'
#!/bin/sh
[ "${FAKE_USERNS:-ok}" = ok ]
EOF
chmod +x "$tmp/bin/cobrowse" "$tmp/bin/chromium" "$tmp/bin/df" "$tmp/bin/id" "$tmp/bin/unshare"
for fake in cobrowse df id unshare; do
    ln -s "$tmp/bin/$fake" "$tmp/nochromium/$fake"
done

# run PATHDIR [VAR=value ...] -- ARGS...: runs the entrypoint in a clean environment, as the last
# command of a shell that first records its own PID (exec keeps it). Sets $out, $err, $rc, $pid.
run() {
    path=$1
    shift
    set -- /usr/bin/env -i PATH="$path" HOME="$tmp" "$@"
    rc=0
    /bin/sh -c 'echo "$$" >"$0"; exec "$@"' "$tmp/pid" "$@" \
        >"$tmp/out" 2>"$tmp/err" || rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
    pid=$(cat "$tmp/pid")
}

ok() {
    passed=$((passed + 1))
    echo "ok - $1"
}

fail() {
    failed=$((failed + 1))
    echo "FAIL - $1: $2"
    echo "  rc=$rc stdout=[$out] stderr=[$err]"
}

# expect_serve NAME ARGV: cobrowse was exec'd with ARGV, exit 0, nothing on stderr.
expect_serve() {
    if [ "$rc" != 0 ]; then
        fail "$1" "exit code $rc"
    elif [ "$out" != "pid=$pid argv=$2" ]; then
        fail "$1" "expected cobrowse exec'd as pid=$pid with argv=$2"
    elif [ -n "$err" ]; then
        fail "$1" "unexpected stderr"
    else
        ok "$1"
    fi
}

# expect_one_stderr_line NAME PATTERN: stderr is one line matching the case PATTERN.
expect_one_stderr_line() {
    lines=$(printf '%s\n' "$err" | grep -c .) || true
    if [ "$lines" != 1 ]; then
        fail "$1" "expected one stderr line, got $lines"
        return 0
    fi
    # shellcheck disable=SC2254 # PATTERN is a pattern on purpose
    case $err in
        $2) ok "$1" ;;
        *) fail "$1" "stderr does not match $2" ;;
    esac
}

run "$tmp/bin" "$entry"
expect_serve "no arguments runs serve" "[serve]"

run "$tmp/bin" "$entry" --max-sessions 3
expect_serve "a leading flag gets serve in front" "[serve][--max-sessions][3]"

run "$tmp/bin" "$entry" serve --listen 0.0.0.0:9
expect_serve "serve passes through" "[serve][--listen][0.0.0.0:9]"

run "$tmp/bin" "$entry" serve --public-url 'a  b' ''
expect_serve "arguments keep their spaces and empties" "[serve][--public-url][a  b][]"

run "$tmp/bin" "$entry" echo hi
if [ "$rc" = 0 ] && [ "$out" = hi ] && [ -z "$err" ]; then
    ok "another command runs instead"
else
    fail "another command runs instead" "expected stdout hi"
fi

run "$tmp/bin" "$entry" sh -c 'echo "$$"; exit 7'
if [ "$rc" = 7 ] && [ "$out" = "$pid" ]; then
    ok "another command is exec'd and its exit code kept"
else
    fail "another command is exec'd and its exit code kept" "expected exit 7 and pid $pid"
fi

run "$tmp/nochromium" "$entry"
if [ "$rc" = 64 ] && [ -z "$out" ]; then
    expect_one_stderr_line "no Chromium exits 64 with one line" "*no Chromium on PATH*"
else
    fail "no Chromium exits 64 with one line" "expected exit 64 and no stdout"
fi

run "$tmp/nochromium" "$entry" echo hi
if [ "$rc" = 0 ] && [ "$out" = hi ]; then
    ok "no Chromium is fine for another command"
else
    fail "no Chromium is fine for another command" "expected stdout hi"
fi

run "$tmp/nochromium" COBROWSE_CHROMIUM=/opt/chrome/chrome "$entry"
expect_serve "COBROWSE_CHROMIUM skips the PATH check" "[serve]"

run "$tmp/nochromium" "$entry" --chromium /opt/chrome/chrome
expect_serve "--chromium skips the PATH check" "[serve][--chromium][/opt/chrome/chrome]"

run "$tmp/nochromium" "$entry" serve --chromium=/opt/chrome/chrome
expect_serve "--chromium= skips the PATH check" "[serve][--chromium=/opt/chrome/chrome]"

run "$tmp/bin" FAKE_SHM_KIB=65536 "$entry"
if [ "$rc" = 0 ] && [ "$out" = "pid=$pid argv=[serve]" ]; then
    expect_one_stderr_line "a 64 MiB /dev/shm warns and still serves" "*warning: /dev/shm is 64 MiB*"
else
    fail "a 64 MiB /dev/shm warns and still serves" "expected cobrowse to run"
fi

run "$tmp/bin" FAKE_SHM_KIB=262144 "$entry"
expect_serve "a 256 MiB /dev/shm does not warn" "[serve]"

run "$tmp/bin" FAKE_UID=10001 FAKE_USERNS=fail "$entry"
if [ "$rc" = 0 ] && [ "$out" = "pid=$pid argv=[serve]" ]; then
    expect_one_stderr_line "no user namespaces as non-root warns and still serves" \
        "*warning: cannot create user namespaces*seccomp=unconfined*"
else
    fail "no user namespaces as non-root warns and still serves" "expected cobrowse to run"
fi

run "$tmp/bin" FAKE_UID=10001 FAKE_USERNS=ok "$entry"
expect_serve "user namespaces as non-root do not warn" "[serve]"

run "$tmp/bin" FAKE_UID=0 FAKE_USERNS=fail "$entry"
expect_serve "root is not checked for user namespaces" "[serve]"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
