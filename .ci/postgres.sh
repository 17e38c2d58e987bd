#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL server for the catalog tests.
#
#   .ci/postgres.sh start [DIR]   start a server with its files in DIR (a new
#                                 temporary directory when DIR is omitted) and
#                                 print its URL as the only line on stdout
#   .ci/postgres.sh stop DIR      stop the server started in DIR and delete
#                                 its files
#
# The server listens on 127.0.0.1 only, on a free port, with trust
# authentication for loopback connections, and with fsync turned off, because
# it only ever contains test data that is thrown away. Progress and the data
# directory go to stderr. initdb refuses to run as root, so under root the
# server runs as the system user named by DISPOTIFY_PG_USER (default
# dispotify-pg), which is created when missing. DIR must then be reachable by
# that user, which is true of the default under /tmp.
set -euo pipefail

readonly SERVER_USER="${DISPOTIFY_PG_USER:-dispotify-pg}"
readonly SUPERUSER_NAME="postgres"
# Attempts at binding a port: another process may take the chosen port between
# the check and the server start.
readonly PORT_ATTEMPTS=10
# Seconds pg_ctl waits for the server to accept connections.
readonly START_TIMEOUT_SECONDS=60

log() {
    echo "postgres.sh: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

usage() {
    echo "usage: $0 start [DIR] | $0 stop DIR" >&2
    exit 2
}

# Prints the directory that contains initdb, pg_ctl and postgres.
find_bin_dir() {
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    local candidate
    candidate="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$candidate" && -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
        echo "$candidate"
        return 0
    fi
    return 1
}

ensure_bin_dir() {
    local dir
    if dir="$(find_bin_dir)"; then
        echo "$dir"
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "initdb and pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL"
    log "installing postgresql with apt-get"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
    dir="$(find_bin_dir)" || die "postgresql installed but initdb and pg_ctl still not found"
    echo "$dir"
}

# Runs a command as the user that owns the server files.
as_server_user() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u "$SERVER_USER" -- "$@"
    else
        "$@"
    fi
}

ensure_server_user() {
    [[ "$(id -u)" == 0 ]] || return 0
    if ! id "$SERVER_USER" >/dev/null 2>&1; then
        log "creating system user $SERVER_USER"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$SERVER_USER"
    fi
}

# Returns success when nothing accepts TCP connections on 127.0.0.1:PORT.
port_is_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local port
    while true; do
        port=$((20000 + RANDOM % 40000))
        if port_is_free "$port"; then
            echo "$port"
            return 0
        fi
    done
}

start() {
    local dir="${1:-}"
    local bin_dir
    bin_dir="$(ensure_bin_dir)"
    ensure_server_user

    if [[ -z "$dir" ]]; then
        dir="$(mktemp -d /tmp/dispotify-pg.XXXXXX)"
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ ! -e "$dir/data" ]] || die "$dir/data already exists; stop that server first or choose another directory"
    if [[ "$(id -u)" == 0 ]]; then
        chown "$SERVER_USER" "$dir"
    fi
    log "data directory: $dir"

    as_server_user "$bin_dir/initdb" --pgdata="$dir/data" --username="$SUPERUSER_NAME" \
        --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    as_server_user tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF

    local attempt port
    for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
        port="$(pick_port)"
        if as_server_user "$bin_dir/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" \
            --wait --timeout="$START_TIMEOUT_SECONDS" \
            --options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >&2; then
            echo "$port" >"$dir/port"
            local url="postgres://$SUPERUSER_NAME@127.0.0.1:$port/postgres"
            if command -v pg_isready >/dev/null; then
                pg_isready --host=127.0.0.1 --port="$port" --username="$SUPERUSER_NAME" --timeout="$START_TIMEOUT_SECONDS" >&2 \
                    || die "server started but does not accept connections on 127.0.0.1:$port"
            fi
            log "server accepts connections at $url"
            echo "$url"
            return 0
        fi
        log "start on port $port failed (attempt $attempt of $PORT_ATTEMPTS)"
        tail -n 5 "$dir/postgres.log" >&2 || true
    done
    die "could not start the server after $PORT_ATTEMPTS attempts; see $dir/postgres.log"
}

stop() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || usage
    [[ -d "$dir/data" ]] || die "$dir/data does not exist; pass the directory that start printed"
    local bin_dir
    bin_dir="$(ensure_bin_dir)"
    if as_server_user "$bin_dir/pg_ctl" --pgdata="$dir/data" status >/dev/null 2>&1; then
        as_server_user "$bin_dir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >&2
    else
        log "no server running in $dir/data"
    fi
    rm -rf "$dir/data" "$dir/postgres.log" "$dir/initdb.log" "$dir/port"
    rmdir "$dir" 2>/dev/null || true
    log "stopped and removed $dir"
}

case "${1:-}" in
    start) shift; start "${1:-}" ;;
    stop) shift; stop "${1:-}" ;;
    *) usage ;;
esac
