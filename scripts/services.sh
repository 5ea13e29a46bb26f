#!/usr/bin/env bash
# Services the labeling-app tests need: a throwaway PostgreSQL cluster on 127.0.0.1 and Chromium.
#
#   eval "$(bash scripts/services.sh start)"   # installs what is missing (Debian, as root), starts
#                                              # PostgreSQL, prints ONLY `export ...` lines on stdout
#   bash scripts/services.sh stop              # stops the cluster and removes its files
#
# Idempotent: `start` reuses a running cluster, `stop` does nothing when none runs. Every wait is
# bounded. Progress goes to stderr. The cluster lives in $INSTRUCTRL_SERVICES_DIR (default
# /tmp/instructrl-services-<hash of the checkout path>) and trusts local connections only: it is for tests, never for data.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# One cluster per checkout, so parallel checkouts on one machine do not stop each other's.
DIR=${INSTRUCTRL_SERVICES_DIR:-/tmp/instructrl-services-$(echo "$ROOT" | sha256sum | cut -c1-10)}
PGDATA_DIR="$DIR/pgdata"
DBNAME=instructrl
DBUSER=instructrl

log() { echo "[services] $*" >&2; }

pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")
    [ -x "$d/initdb" ] && echo "$d"
}

chromium_bin() {
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

# Run a command as the cluster's owner (initdb refuses to run as root).
as_owner() {
    if [ "$(id -u)" = "0" ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install_missing() {
    local pkgs=()
    [ -z "$(pg_bindir)" ] && pkgs+=(postgresql)
    [ -z "$(chromium_bin)" ] && pkgs+=(chromium)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
        log "missing ${pkgs[*]} and cannot install (needs root and apt-get): dependent tests will skip"
        return 0
    fi
    log "installing ${pkgs[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q >&2 || log "apt-get update failed"
    timeout 1200 apt-get install -y -q "${pkgs[@]}" >&2 || log "apt-get install ${pkgs[*]} failed"
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 20000))
    fi
}

pg_running() {
    local bindir=$1
    [ -f "$PGDATA_DIR/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

start_pg() {
    local bindir port
    bindir=$(pg_bindir)
    if [ -z "$bindir" ]; then
        log "PostgreSQL is not installed: PostgreSQL tests will skip"
        return 1
    fi
    if pg_running "$bindir" && [ -f "$DIR/port" ]; then
        log "PostgreSQL already running on port $(cat "$DIR/port")"
        return 0
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = "0" ] && chown postgres: "$DIR"
    port=$(free_port) || return 1
    log "initdb in $PGDATA_DIR"
    if ! as_owner timeout 120 "$bindir/initdb" -D "$PGDATA_DIR" -U "$DBUSER" --auth=trust -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1; then
        log "initdb failed:"; tail -n 20 "$DIR/initdb.log" >&2; return 1
    fi
    log "starting PostgreSQL on 127.0.0.1:$port"
    if ! as_owner timeout 60 "$bindir/pg_ctl" -D "$PGDATA_DIR" -l "$DIR/postgres.log" -w -t 30 \
            -o "-h 127.0.0.1 -p $port -k $DIR -c fsync=off -c max_connections=200" start >&2; then
        log "PostgreSQL did not start:"; tail -n 20 "$DIR/postgres.log" >&2; return 1
    fi
    if ! timeout 30 "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$DBUSER" -d postgres -v ON_ERROR_STOP=1 -q \
            -c "CREATE DATABASE $DBNAME" >&2; then
        log "could not create database $DBNAME"; return 1
    fi
    echo "$port" > "$DIR/port"
}

stop_pg() {
    local bindir
    bindir=$(pg_bindir)
    if [ -n "$bindir" ] && pg_running "$bindir"; then
        log "stopping PostgreSQL"
        as_owner timeout 60 "$bindir/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >&2 \
            || as_owner timeout 30 "$bindir/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 20 stop >&2 || true
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
    start)
        # stdout is for export lines only. The server must not inherit the caller's stdout (a pipe when
        # run as "$(... start)"), or the caller would wait for it to close until PostgreSQL stops.
        install_missing </dev/null >&2
        chrome=$(chromium_bin)
        [ -n "$chrome" ] && echo "export INSTRUCTRL_CHROMIUM=$chrome"
        if start_pg </dev/null >&2; then
            echo "export INSTRUCTRL_PG_URL=postgresql+psycopg://$DBUSER@127.0.0.1:$(cat "$DIR/port")/$DBNAME"
        fi
        ;;
    stop)
        stop_pg
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
