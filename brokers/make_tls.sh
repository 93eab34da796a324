#!/bin/sh
# A certificate authority and a server certificate for the broker's TLS listener
# (`make broker BROKER_TLS=1`, brokers/run_mosquitto.sh --tls).
#
#   brokers/make_tls.sh [--out DIR] [NAME...]
#
# NAMEs are what clients dial: DNS names or IP addresses, all written into the certificate's
# subjectAltName (default: localhost 127.0.0.1 and this host's name). Writes DIR/ca.crt (copy it
# to every device: --ca-file), DIR/ca.key, DIR/server.crt and DIR/server.key (DIR: brokers/tls,
# git-ignored; keys mode 600). An existing certificate is kept: delete DIR to make new ones.
set -eu
cd "$(dirname "$0")/.."
out=brokers/tls
if [ "${1:-}" = --out ]; then
    out=$2
    shift 2
fi
command -v openssl >/dev/null 2>&1 || { echo "openssl not found: apt-get install openssl" >&2; exit 1; }
if [ -f "$out/server.crt" ]; then
    echo "$out/server.crt exists; delete $out to make new certificates"
    exit 0
fi
[ "$#" -gt 0 ] || set -- localhost 127.0.0.1 "$(hostname)"
san=""
for name in "$@"; do
    case $name in
        *[!0-9.]*) entry="DNS:$name" ;;
        *) entry="IP:$name" ;;
    esac
    san=${san:+$san,}$entry
done
umask 077
mkdir -p "$out"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=pynq-fewshot-fl broker CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf "subjectAltName=%s\n" "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days 365 \
    -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
chmod 644 "$out/ca.crt" "$out/server.crt"
echo "wrote $out/ca.crt, $out/server.crt and $out/server.key for $san"
