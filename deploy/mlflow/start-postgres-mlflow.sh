#!/usr/bin/env bash
# The shared MLflow tracking server on PostgreSQL (runs in the foreground; Ctrl-C stops MLflow).
#
#   deploy/mlflow/start-postgres-mlflow.sh          # start (PostgreSQL first, then `mlflow server`)
#   deploy/mlflow/start-postgres-mlflow.sh stop     # stop the local PostgreSQL it started
#
# Then point training at it:  MLFLOW_TRACKING_URI=http://HOST:PORT tradebot tune ...  (or --tracking-uri)
#
# Environment (all optional):
#   MLFLOW_BACKEND_STORE_URI      an existing database, e.g. postgresql://mlflow:PW@my-rds:5432/mlflow;
#                                 unset: a PostgreSQL cluster of its own in $MLFLOW_DATA/pg (initdb on first use)
#   MLFLOW_DATA                   folder for that cluster, its password and local artifacts (default ~/mlflow)
#   MLFLOW_PG_PORT                that cluster's port on 127.0.0.1 (default 5433)
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts go: a folder or s3://bucket/prefix (default $MLFLOW_DATA/artifacts);
#                                 clients upload through the server (proxied artifacts), so they need no S3 access
#   MLFLOW_HOST / MLFLOW_PORT     the server's address (default 127.0.0.1:5000; 0.0.0.0 for a cluster,
#                                 behind a security group or a private network: the server has no auth)
#   MLFLOW_BIN                    the mlflow executable (default: mlflow next to this venv's python, else on PATH)
#
# Needs PostgreSQL's server binaries for the local cluster (Debian/Ubuntu: apt-get install postgresql) and
# the psycopg (3) driver, which SQLAlchemy 2.1 uses for postgresql:// (a dependency of this project). As root, PostgreSQL runs as the `postgres` user.
set -euo pipefail

DATA=${MLFLOW_DATA:-$HOME/mlflow}
PG_PORT=${MLFLOW_PG_PORT:-5433}
PGDIR=$DATA/pg
PWFILE=$DATA/pg-password
LOG=$DATA/postgres.log

pg_bin() {
  local b
  b=$(command -v pg_ctl 2>/dev/null || true)
  if [ -n "$b" ]; then dirname "$(readlink -f "$b")"; return; fi
  b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$b" ] || { echo "error: PostgreSQL server binaries not found; install them (apt-get install postgresql) or set MLFLOW_BACKEND_STORE_URI" >&2; exit 2; }
  echo "$b"
}

as_pg() {  # PostgreSQL refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = stop ]; then
  if [ -f "$PGDIR/postmaster.pid" ]; then as_pg "$(pg_bin)/pg_ctl" -D "$PGDIR" -m fast -w stop; fi
  exit 0
fi

mkdir -p "$DATA"
if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  BIN=$(pg_bin)
  if [ ! -s "$PWFILE" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PWFILE")
  fi
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    chmod 755 "$DATA"
    mkdir -p "$PGDIR"; chown postgres "$PGDIR" "$PWFILE"
    as_pg test -x "$DATA" || { echo "error: the postgres user cannot reach $DATA; use an MLFLOW_DATA whose parents are world-readable (e.g. under /srv or /tmp)" >&2; exit 2; }
  fi
  if [ ! -f "$PGDIR/PG_VERSION" ]; then
    as_pg "$BIN/initdb" -D "$PGDIR" --username=mlflow --pwfile="$PWFILE" --auth=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if ! as_pg "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
    # TCP on loopback only, no Unix socket (its path could exceed the 107-byte limit under deep folders)
    touch "$LOG"; [ "$(id -u)" = 0 ] && chown postgres "$LOG"
    as_pg "$BIN/pg_ctl" -D "$PGDIR" -l "$LOG" -w -t 60 \
      -o "-h 127.0.0.1 -p $PG_PORT -k ''" start >/dev/null
  fi
  PW=$(cat "$PWFILE")
  if ! PGPASSWORD=$PW "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U mlflow -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1; then
    PGPASSWORD=$PW "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mlflow mlflow
  fi
  MLFLOW_BACKEND_STORE_URI="postgresql://mlflow:$PW@127.0.0.1:$PG_PORT/mlflow"
fi

ARTIFACTS=${MLFLOW_ARTIFACTS_DESTINATION:-$DATA/artifacts}
case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS"; ARTIFACTS=$(cd "$ARTIFACTS" && pwd) ;; esac
MLFLOW=${MLFLOW_BIN:-}
if [ -z "$MLFLOW" ]; then
  here=$(cd "$(dirname "$0")/../.." && pwd)
  if [ -x "$here/.venv/bin/mlflow" ]; then MLFLOW=$here/.venv/bin/mlflow; else MLFLOW=mlflow; fi
fi
# One worker and no job runner: 2 processes and about 550 MiB instead of ~15 and 3 GiB (docs/deploy.md).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
echo "mlflow server: backend postgresql on ${MLFLOW_BACKEND_STORE_URI##*@}, artifacts $ARTIFACTS, http://${MLFLOW_HOST:-127.0.0.1}:${MLFLOW_PORT:-5000}" >&2
# The database URI (with its password) goes through the environment, not the command line (`ps`).
export MLFLOW_BACKEND_STORE_URI
exec "$MLFLOW" server --artifacts-destination "$ARTIFACTS" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" --workers 1
