#!/usr/bin/env bash
# CI step: the PostgreSQL repository example against the machine's PostgreSQL.
#
# Starts PostgreSQL when it is not running (installs it when missing), makes
# sure database `test` exists and is reachable over TCP, then runs
# `cargo run --release --example postgres_repo`, which fires 1000 concurrent
# lookups of an expired key and asserts FROM THE DATABASE SIDE (a counter the
# server-side function bumps) that exactly one query ran. Exits non-zero if
# anything fails.
#
# Honours DATABASE_URL when set (then nothing is installed or started).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${DATABASE_URL:-}" ]]; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "postgres-example: installing PostgreSQL"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
        echo "postgres-example: starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    for _ in $(seq 1 30); do
        runuser -u postgres -- psql -qAt -c 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
    psql_su() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt "$@"; }
    if [[ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]]; then
        psql_su -c 'CREATE DATABASE test'
    fi
    # The default URL (postgres://postgres@127.0.0.1/test) needs trust auth on
    # 127.0.0.1; stock pg_hba.conf asks for a password, so use a dedicated
    # role with one rather than loosening the server's authentication.
    if psql -h 127.0.0.1 -U postgres -d test -w -qAt -c 'SELECT 1' >/dev/null 2>&1; then
        export DATABASE_URL="postgres://postgres@127.0.0.1/test"
    else
        psql_su -d test <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stampede_example') THEN
        CREATE ROLE stampede_example LOGIN PASSWORD 'stampede_example';
    END IF;
END $$;
GRANT ALL ON SCHEMA public TO stampede_example;
GRANT CREATE ON DATABASE test TO stampede_example;
SQL
        # Objects a previous run created as another role must be ours to replace.
        for obj in "TABLE stampede_users" "TABLE stampede_query_count" "FUNCTION stampede_find_user(bigint)" "FUNCTION stampede_find_users(bigint[])"; do
            psql_su -d test -c "ALTER $obj OWNER TO stampede_example" >/dev/null 2>&1 || true
        done
        export DATABASE_URL="postgres://stampede_example:stampede_example@127.0.0.1/test"
    fi
fi

echo "postgres-example: DATABASE_URL=${DATABASE_URL//:*@/:***@}"
cargo run --release --example postgres_repo
