# Sourced by scripts/test.sh: Debian's PostgreSQL server, installed when missing, for the tests that
# run the job queue on PostgreSQL (tests/server/test_postgres.py; they start a private server of
# their own in a temporary directory, tests/pg.py). Nothing is installed when a server is already
# there (a glob, no apt call), and nothing can be without root and apt-get: the tests then skip
# and say why.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing postgresql for the database tests ..."
    pg_started=$SECONDS
    # The package index may be missing or stale on a fresh machine: update once, only if needed.
    if (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1)); then
      echo "installed postgresql in $((SECONDS - pg_started))s"
    else
      echo "could not install postgresql: the PostgreSQL tests will be skipped"
    fi
    unset pg_started
  else
    echo "no PostgreSQL server here (and no root with apt-get to install one): the PostgreSQL tests will be skipped"
  fi
fi
