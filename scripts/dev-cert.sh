#!/usr/bin/env bash
# Creates a self-signed development certificate for localhost (dev.crt, dev.key) for
# Traefik's HTTPS entrypoint, unless a valid one is already there. Never for production.
# Usage: dev-cert.sh <directory>
set -euo pipefail
dir="${1:?usage: $0 <directory>}"
mkdir -p "$dir"
# Keep a certificate that is still valid for a day; otherwise make a new one.
if [ -f "$dir/dev.crt" ] && [ -f "$dir/dev.key" ] && openssl x509 -checkend 86400 -noout -in "$dir/dev.crt" >/dev/null 2>&1; then
  exit 0
fi
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 365 \
  -subj "/CN=localhost/O=Gatehouse development" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -keyout "$dir/dev.key.tmp" -out "$dir/dev.crt.tmp" 2>/dev/null
chmod 600 "$dir/dev.key.tmp"
mv "$dir/dev.key.tmp" "$dir/dev.key" && mv "$dir/dev.crt.tmp" "$dir/dev.crt"
