#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL cluster: initdb in a temporary directory, start it on a
# free loopback port, export EXWATCH_TEST_PG_URL, run the command, then stop and remove the cluster.
set -euo pipefail
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || { echo "with-postgres: PostgreSQL is not installed (run scripts/system-deps.sh test)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/exwatch-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$tmp"; run=(runuser -u postgres --)
fi
cleanup() { "${run[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
"${run[@]}" "$bindir/initdb" -D "$tmp/data" -U exwatch --auth=trust -E UTF8 >/dev/null
"${run[@]}" "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
"${run[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U exwatch exwatch
export EXWATCH_TEST_PG_URL="postgresql://exwatch@127.0.0.1:$port/exwatch"
echo "with-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') at 127.0.0.1:$port" >&2
"$@"
