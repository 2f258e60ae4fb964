#!/usr/bin/env bash
# A throw-away PostgreSQL server on 127.0.0.1 for the distributed tuning test (tests/core/test_tune.py).
#   bash .ci/postgres.sh start DIR   -> starts it with its data, socket and log in DIR, prints its URL
#   bash .ci/postgres.sh stop DIR
# Installs Debian's postgresql package when no server binaries are found. As root, the server runs
# as the unprivileged user `postgres` (made by the package); it listens on 127.0.0.1 only, trusting
# local connections (a test database, no data of value).
set -euo pipefail
cmd=${1:?start|stop} dir=${2:?directory}
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
bin=$(find_bin)
if [ "$cmd" = stop ]; then
    [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ] && run "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    exit 0
fi
if [ -z "$bin" ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(find_bin)
fi
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >"$dir/initdb.log" 2>&1
run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off" start >/dev/null
run "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres tune
echo "postgresql://postgres@127.0.0.1:$port/tune"
