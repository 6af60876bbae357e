#!/usr/bin/env bash
# Rotates the log files that programs of the native stack write themselves rather than
# through supervisord (which rotates the others): Traefik's access log
# ($GATEHOUSE_STATE/logs/traefik-access.log, docs/logging.md). Debian's logrotate, every
# 30 s: a file over 20 MB becomes <file>.1 (the one before is deleted) and its writer is
# told to reopen it (Traefik: USR1, through supervisorctl). The log shipper follows the
# renamed file to its end, then the new one.
# Usage: logrotate.sh          rotate whatever is due, every 30 s (supervisord's program)
#        logrotate.sh --force  rotate every file once, now, and return
source "$(dirname "$0")/lib.sh"
: "${GATEHOUSE_STATE:?names the state directory of the native stack}"
dir="$GATEHOUSE_STATE/logrotate"
mkdir -p "$dir"
cat > "$dir/logrotate.conf.tmp" <<CONF
"$GATEHOUSE_STATE/logs/traefik-access.log" {
  size 20M
  rotate 1
  missingok
  notifempty
  nocompress
  postrotate
    bash "$REPO_ROOT/scripts/run.sh" ctl signal USR1 traefik > /dev/null
  endscript
}
CONF
mv "$dir/logrotate.conf.tmp" "$dir/logrotate.conf"
logrotate="$(command -v logrotate || echo /usr/sbin/logrotate)"
if [ "${1:-}" = --force ]; then
  exec "$logrotate" --force --state "$dir/status" "$dir/logrotate.conf"
fi
while :; do
  "$logrotate" --state "$dir/status" "$dir/logrotate.conf" || log "logrotate failed; trying again in 30 s"
  sleep 30
done
