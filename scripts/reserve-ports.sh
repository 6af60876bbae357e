#!/usr/bin/env bash
# The services' gRPC ports (50051-50053, +100 per replica, replicas from *_REPLICAS) lie
# inside Linux's ephemeral port range: an outgoing connection that happens to get one as
# its local port keeps the service from binding it. Takes them out of automatic
# assignment (net.ipv4.ip_local_reserved_ports) where this shell may, i.e. as root, and
# says so when it cannot; run.sh up calls it before starting the services.
source "$(dirname "$0")/lib.sh"
file=/proc/sys/net/ipv4/ip_local_reserved_ports
ranges="" replicas=1
for n in "${GATEWAY_REPLICAS:-1}" "${AUTHORS_REPLICAS:-1}" "${AUDIT_REPLICAS:-1}" "${RATELIMIT_REPLICAS:-1}"; do
  ((n > replicas)) && replicas=$n
done
for ((k = 0; k < replicas; k++)); do
  ranges+="${ranges:+,}$((50051 + 100 * k))-$((50053 + 100 * k))"
done
current="$(cat "$file" 2>/dev/null || true)"
if { [ -w "$file" ] && echo "${current:+$current,}$ranges" > "$file"; } 2>/dev/null; then
  log "reserved ports $ranges"
else
  log "could not reserve ports $ranges (net.ipv4.ip_local_reserved_ports); a service may fail to bind one in use"
fi
