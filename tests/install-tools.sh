#!/bin/sh
# Installs the Debian packages the lab tests need (coturn, dnsmasq, iptables, openssl,
# iproute2) when running as root on a machine with apt-get. Elsewhere it says what is
# missing, and the lab tests skip themselves with that reason.
set -eu
missing=""
command -v turnserver >/dev/null 2>&1 || missing="$missing coturn"
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing="$missing dnsmasq-base"
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$missing iptables"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing="$missing iproute2"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "not installing:$missing (needs root and apt-get); the lab tests will be skipped" >&2
fi
