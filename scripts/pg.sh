#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for palisade-durable's tests.
#
#   scripts/pg.sh CMD [ARGS...]   start a cluster, run CMD with TEST_PALISADE_PG_URL exported, stop the
#                                 cluster, exit with CMD's status. For CI:
#                                   scripts/pg.sh cargo test -p palisade-durable --features postgres
#   scripts/pg.sh                 start a cluster, print `export TEST_PALISADE_PG_URL=...`, keep it up
#                                 until Ctrl-C (or until stdin closes), then stop it.
#
# The cluster lives in a temp dir, listens on a free loopback port only, trusts local
# connections, runs with fsync off (it is thrown away), and is removed on exit. initdb refuses
# to run as root, so as root the server runs as the `postgres` user (created if missing).
# PostgreSQL's server binaries are installed with apt-get when they are missing.
set -euo pipefail

find_bin() {
  if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then echo "$PG_BIN"; return 0; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return 0; fi
  return 1
}

if ! PG_BIN=$(find_bin); then
  echo "pg.sh: PostgreSQL server binaries not found; installing them with apt-get" >&2
  if [[ $(id -u) -ne 0 ]]; then echo "pg.sh: need root to install postgresql" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  PG_BIN=$(find_bin) || { echo "pg.sh: postgresql installed but initdb not found" >&2; exit 1; }
fi

as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  as_pg=(runuser -u postgres --)
fi

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "pg.sh: no free port found" >&2; exit 1
}

# /tmp rather than $TMPDIR: as root, the server runs as `postgres`, which must be able to reach
# the directory (a root-only $TMPDIR would not do). PALISADE_PG_TMP overrides it.
dir=$(mktemp -d "${PALISADE_PG_TMP:-/tmp}/palisade-pg.XXXXXX")
chmod 755 "$dir"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$dir"

stop() {
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${as_pg[@]}" "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }

port=""
for _ in 1 2 3; do
  port=$(free_port)
  if "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
       -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=200" \
       start >/dev/null; then
    break
  fi
  port=""
done
if [[ -z "$port" ]]; then cat "$dir/server.log" >&2; echo "pg.sh: server did not start" >&2; exit 1; fi

export TEST_PALISADE_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "pg.sh: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2

if [[ $# -gt 0 ]]; then
  set +e
  "$@"
  status=$?
  set -e
  exit "$status"
fi

echo "export TEST_PALISADE_PG_URL=$TEST_PALISADE_PG_URL"
echo "pg.sh: running; Ctrl-C (or close stdin) to stop" >&2
cat >/dev/null || true
