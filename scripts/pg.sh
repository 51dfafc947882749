#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, CI and benchmarks (Debian's `postgresql` package).
#
#   eval "$(scripts/pg.sh start)"   # prints `export DATABASE_URL=… PG_TEST_DIR=…`
#   scripts/pg.sh stop [DIR]        # stops the server in DIR (default $PG_TEST_DIR) and deletes DIR
#   scripts/pg.sh bindir            # prints the directory of the PostgreSQL binaries (exit 1 if none)
#
# `start` makes a fresh cluster in a temp dir (or $PG_TEST_DIR if set and empty), trusts local
# connections, listens on 127.0.0.1 on a free port (or $PG_PORT), tunes for speed over durability
# (fsync off: a test server only) and creates the database `imagine` (or $PG_DB). PostgreSQL refuses
# to run as root, so as root the server runs as the `postgres` user. Binaries: $PG_BIN, else the
# newest /usr/lib/postgresql/*/bin, else whatever `initdb` is on PATH.
set -euo pipefail

bindir() {
    if [ -n "${PG_BIN:-}" ]; then
        if [ -x "$PG_BIN/initdb" ]; then
            echo "$PG_BIN"
            return 0
        fi
        echo "pg.sh: no initdb in PG_BIN=$PG_BIN" >&2
        return 1
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    echo "pg.sh: no PostgreSQL binaries (apt-get install -y postgresql, or set PG_BIN)" >&2
    return 1
}

# Run a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local bin dir port db
    bin="$(bindir)"
    dir="${PG_TEST_DIR:-}"
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/imagine-pg.XXXXXX")"
    fi
    mkdir -p "$dir/data" "$dir/sock"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$dir"
    fi
    port="${PG_PORT:-$(free_port)}"
    db="${PG_DB:-imagine}"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o \
        "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
    echo "export DATABASE_URL=postgresql://postgres@127.0.0.1:$port/$db PG_TEST_DIR=$dir"
}

stop() {
    local bin dir
    dir="${1:-${PG_TEST_DIR:-}}"
    if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
        echo "pg.sh stop: no server directory (pass it or set PG_TEST_DIR)" >&2
        exit 1
    fi
    bin="$(bindir)"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    bindir) bindir ;;
    *)
        echo "usage: $0 start | stop [DIR] | bindir" >&2
        exit 2
        ;;
esac
