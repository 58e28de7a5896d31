"""Names, addresses, ports and credentials of the network lab.

Everything lives in documentation ranges (RFC 5737, RFC 3849) inside the lab's own
namespaces, so nothing here can collide with a real network or the host's routes.
"""

from __future__ import annotations

from pathlib import Path

# Namespaces.
CLIENT_NS = "ice-client"
ROUTER_NS = "ice-router"
SERVER_NS = "ice-server"
NAMESPACES = (CLIENT_NS, ROUTER_NS, SERVER_NS)

# Client <-> router: two veth pairs, one per client interface.
CLIENT_DEV_A = "c0"
CLIENT_DEV_B = "c1"
ROUTER_DEV_A = "r0"
ROUTER_DEV_B = "r1"
CLIENT_IPV4_A = "203.0.113.2"
CLIENT_IPV4_B = "203.0.113.130"
CLIENT_IPV6 = "2001:db8:a::2"
ROUTER_INSIDE_IPV4_A = "203.0.113.1"
ROUTER_INSIDE_IPV4_B = "203.0.113.129"
ROUTER_INSIDE_IPV6 = "2001:db8:a::1"
INSIDE_IPV4_NET = "203.0.113.0/24"
INSIDE_IPV6_NET = "2001:db8:a::/64"
INSIDE_PREFIX_V4 = 25
# Policy-routing table so traffic from the second client address leaves through c1.
CLIENT_B_ROUTE_TABLE = 101

# Router <-> server: a TUN device on each side joined by the userspace delay link.
ROUTER_LINK_DEV = "dlink0"
SERVER_LINK_DEV = "dlink0"
ROUTER_PUBLIC_IPV4 = "198.51.100.1"
ROUTER_PUBLIC_IPV6 = "2001:db8:b::1"

# Server addresses.
SERVER_IPV4 = "198.51.100.10"
SERVER_ALT_IPV4 = "198.51.100.11"  # second address for RFC 5780 OTHER-ADDRESS
SERVER_IPV6 = "2001:db8:b::10"
DEAD_IPV4 = "198.51.100.20"  # routed to the server, silently dropped there
DEAD_IPV6 = "2001:db8:b::20"
CLOSED_UDP_PORT = 3999  # nothing listens: the kernel answers ICMP port unreachable

# Main coturn instance.
STUN_PORT = 3478  # UDP and TCP, STUN and TURN
STUN_ALT_PORT = 3479  # RFC 5780 alternate port
TLS_PORT = 5349  # TLS (TCP) and DTLS (UDP)
TLS_ALT_PORT = 5350
RELAY_PORT_RANGE = (49152, 57343)

# Second coturn instance: short lifetimes and a one-allocation quota.
SHORT_TURN_PORT = 3480  # UDP and TCP
SHORT_TURN_ALT_PORT = 3481
SHORT_MAX_ALLOCATE_LIFETIME_S = 20
SHORT_STALE_NONCE_S = 10
SHORT_PERMISSION_LIFETIME_S = 20
SHORT_CHANNEL_LIFETIME_S = 20
SHORT_USER_QUOTA = 1
SHORT_RELAY_PORT_RANGE = (57344, 65535)

# Third coturn instance: a load balancer that answers every Allocate with 300 Try
# Alternate, sending the client to the main instance (coturn's alternate-server).
REDIRECT_TURN_PORT = 3483  # UDP and TCP, IPv4

# Extra servers, each started when its tool is installed (tests/install-tools.sh):
# node-turn, an independent TURN server (npm) whose nonces are not bound to the client's
# 5-tuple, so a nonce cached from one allocation lets the next one skip the 401; and
# stunnel in front of coturn's TCP port, for TURN over TLS 1.3 (coturn 4.6 stops at 1.2).
NODE_TURN_PORT = 3482  # UDP only; it relays from SERVER_ALT_IPV4, apart from coturn
NODE_TURN_PREFIX = Path("/var/lib/ice-engine-lab/npm")  # npm install --prefix
NODE_TURN_VERSION = "0.0.6"
TLS13_PORT = 5351  # TLS 1.3 only, forwarded to coturn's TCP STUN_PORT

# Long-term credentials shared by every TURN server of the lab.
REALM = "lab.test"
USERNAME = "alice"
PASSWORD = "wonderland"

# DNS (dnsmasq on the server).
DNS_SERVER_IPV4 = SERVER_IPV4
DNS_SERVER_IPV6 = SERVER_IPV6
DNS_PORT = 53
DNS_TTL_S = 30
DOMAIN = "lab.test"
STUN_HOST = "stun.lab.test"  # A + AAAA
TURN_HOST = "turn.lab.test"  # A + AAAA
V4ONLY_HOST = "v4only.lab.test"  # A only
DEAD_HOST = "dead.lab.test"  # A -> DEAD_IPV4
SRV_ONLY_DOMAIN = "srv.lab.test"  # no A/AAAA: only _stun._udp SRV -> STUN_ALT_PORT
BACKUP_DOMAIN = "backup.lab.test"  # no A/AAAA: _turn/_stun._udp SRV, DEAD_HOST first, then ours
TLS_SAN_DNS = (TURN_HOST, STUN_HOST)
TLS_SAN_IP = (SERVER_IPV4, SERVER_IPV6)

# Host-side state: config files, certificates, logs and PID files.
STATE_DIR = Path("/run/ice-engine-lab")
LOCK_FILE = Path("/run/ice-engine-lab.lock")
USERS_DIR = Path("/run/ice-engine-lab.users")  # leases of live test sessions, and the pin
NETNS_ETC = Path("/etc/netns")
CA_CERT_FILE = STATE_DIR / "ca.pem"

#: The most one-way delay the delay link takes: RTTs past two seconds test nothing more.
MAX_DELAY_MS = 1000

# Bump when the layout changes so a lab left up by older code is rebuilt, not reused.
LAYOUT_VERSION = 3
