#!/usr/bin/env bash
# The images' entrypoint (docker/Dockerfile, docker/Dockerfile.cuda); docs/containers.md.
#   (no command) | serve [OPTIONS]   tunesmith serve on 0.0.0.0:$TUNESMITH_PORT, options passed on
#   -...                             the same: options for `tunesmith serve`
#   anything else                    run as is: `tunesmith models pull ...`, `tunesmith keys create`, bash
# The server answers on a non-loopback interface only with API keys. Either pass one in
# TUNESMITH_API_KEY (registered in the home's database under the name "env:TUNESMITH_API_KEY" on
# each start, as a key of TUNESMITH_API_KEY_ROLE, default user; a changed value revokes the old
# one), or mount a home whose database holds keys (`tunesmith keys create`). No key is ever
# stored in the image, and a server without any key refuses to start.
set -euo pipefail

export TUNESMITH_HOME=${TUNESMITH_HOME:-/data}
port=${TUNESMITH_PORT:-8000}
host=${TUNESMITH_HOST:-0.0.0.0}
workers=${TUNESMITH_WORKERS:-0}

die() { echo "entrypoint: $*" >&2; exit 64; }

register_keys() {
  # Register $TUNESMITH_API_KEY (by its hash, as `tunesmith keys create` stores keys), then count
  # the active keys. Prints that count.
  python - <<'PY'
import os
import secrets
import time

from sqlalchemy import select

from tunesmith.jobs.db import Database, KeyRow
from tunesmith.jobs.keys import ROLES, _hash, list_keys
from tunesmith.workspace import Workspace

NAME = "env:TUNESMITH_API_KEY"
db = Database.for_workspace(Workspace.default())
secret = os.environ.get("TUNESMITH_API_KEY", "")
role = os.environ.get("TUNESMITH_API_KEY_ROLE") or "user"
if secret:
    if len(secret) < 20 or secret != secret.strip():
        raise SystemExit("entrypoint: TUNESMITH_API_KEY must be at least 20 characters, without spaces around it "
                         "(e.g. ts-$(openssl rand -hex 20))")
    if role not in ROLES:
        raise SystemExit(f"entrypoint: TUNESMITH_API_KEY_ROLE must be one of {', '.join(ROLES)}, not {role!r}")
    digest, now = _hash(secret), int(time.time())
    with db.session() as session:
        mine = None
        for row in session.scalars(select(KeyRow).where(KeyRow.name == NAME, KeyRow.revoked_at.is_(None))):
            if row.hash == digest:
                mine = row
            else:
                row.revoked_at = now  # the variable changed: the old value stops working
        if mine is None:
            if session.scalar(select(KeyRow).where(KeyRow.hash == digest)) is not None:
                raise SystemExit("entrypoint: TUNESMITH_API_KEY is a key this home already holds (revoked, or made "
                                 "with `tunesmith keys create`): pass a new value, or no TUNESMITH_API_KEY")
            session.add(KeyRow(id="key_" + secrets.token_hex(8), name=NAME, hash=digest, prefix=secret[:7],
                               created_at=now, role=role))
        else:
            mine.role = role
print(sum(1 for key in list_keys(db) if key["revoked_at"] is None))
PY
}

serve() {
  [ -d "$TUNESMITH_HOME" ] || mkdir -p "$TUNESMITH_HOME"
  [ -w "$TUNESMITH_HOME" ] || die "TUNESMITH_HOME=$TUNESMITH_HOME is not writable by uid $(id -u):" \
    "use a named volume, or chown the mounted folder to $(id -u) (or run with --user)"
  local active
  active=$(register_keys) || exit 64
  if [ "$active" = 0 ]; then
    die "no API key: pass one in TUNESMITH_API_KEY (e.g. -e TUNESMITH_API_KEY=ts-\$(openssl rand -hex 20))," \
      "or mount a home (at $TUNESMITH_HOME) whose keys were made with \`tunesmith keys create\`"
  fi
  echo "entrypoint: serving $TUNESMITH_HOME on $host:$port ($active active API key(s))" >&2
  unset TUNESMITH_API_KEY  # registered; the server and its workers need not see it
  # The options given after ours win (click keeps an option's last value).
  exec tunesmith serve --host "$host" --port "$port" --workers "$workers" "$@"
}

case "${1:-serve}" in
  serve) shift $(( $# > 0 ? 1 : 0 )); serve "$@" ;;
  -*) serve "$@" ;;
  *) exec "$@" ;;
esac
