#!/bin/sh
# Create a Mosquitto password file with a random password for each user name, and
# print "user password" lines (keep them: devices need theirs in --broker mqtt://user:password@host).
# Usage: brokers/make_passwords.sh PASSWORD_FILE coordinator client-000 client-001 ...
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: $0 PASSWORD_FILE USER [USER...]" >&2
    exit 2
fi
command -v mosquitto_passwd >/dev/null 2>&1 || {
    echo "mosquitto_passwd not found: apt-get install mosquitto" >&2
    exit 1
}
file=$1
shift
umask 077
: > "$file"
for user in "$@"; do
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    mosquitto_passwd -b "$file" "$user" "$password"
    echo "$user $password"
done
