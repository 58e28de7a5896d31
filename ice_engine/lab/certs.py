"""A throwaway test CA and the TURN server certificate, made with the openssl CLI.

A fresh CA per lab build means no private key ever outlives the lab, and clients verify
TLS/DTLS against ``ca.pem`` exactly as they would against a real CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ice_engine.lab.topology import TLS_SAN_DNS, TLS_SAN_IP

VALID_DAYS = 30
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_tls_files(state_dir: Path) -> TlsFiles:
    files = TlsFiles(state_dir / "ca.pem", state_dir / "server.pem", state_dir / "server.key")
    ca_key = state_dir / "ca.key"
    csr = state_dir / "server.csr"
    extensions = state_dir / "server-ext.cnf"
    _openssl(
        "req", "-x509", *EC_KEY, "-keyout", str(ca_key), "-out", str(files.ca_cert),
        "-days", str(VALID_DAYS), "-subj", "/CN=ICE Engine Lab Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-new", *EC_KEY, "-keyout", str(files.server_key), "-out", str(csr),
        "-subj", f"/CN={TLS_SAN_DNS[0]}",
    )  # fmt: skip
    san = ",".join([*(f"DNS:{d}" for d in TLS_SAN_DNS), *(f"IP:{ip}" for ip in TLS_SAN_IP)])
    extensions.write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(files.ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", str(VALID_DAYS), "-sha256",
        "-extfile", str(extensions), "-out", str(files.server_cert),
    )  # fmt: skip
    return files
