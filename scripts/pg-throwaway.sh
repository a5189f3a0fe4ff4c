# Sourced by scripts/test and scripts/bench: starts a throwaway PostgreSQL cluster in a temporary
# directory (as the postgres user when run as root), exports POMONA_TEST_POSTGRES_URL, and
# defines pg_throwaway_stop. Needs the Debian postgresql package.
pg_throwaway_start() {
  local pg_bin
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin)." >&2
    echo "Install them with: sudo apt-get install -y postgresql   (or set POMONA_TEST_POSTGRES_URL)" >&2
    return 1
  fi
  PG_BIN=$pg_bin
  PG_DIR=$(mktemp -d /tmp/pomona-pg.XXXXXX)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    chown postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U pomona >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 ${PG_EXTRA_OPTS:-} -c max_connections=200" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; return 1; }
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U pomona pomona_test
  export POMONA_TEST_POSTGRES_URL="postgres://pomona@127.0.0.1:$port/pomona_test"
  echo "throwaway PostgreSQL on 127.0.0.1:$port" >&2
}

pg_throwaway_stop() {
  if [ -n "${PG_DIR:-}" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=
  fi
}
