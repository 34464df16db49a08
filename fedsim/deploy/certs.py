"""A private certificate authority and a SuperLink server certificate, for TLS.

``fedsim certs OUT_DIR --host link.example.org`` writes

- ``ca.crt`` — the CA certificate: give it to every SuperNode (``--root-certificates``)
  and to ``flwr`` (``root-certificates`` of the SuperLink connection);
- ``ca.key`` — the CA's private key (mode 0600): keep it offline, it signs server certs;
- ``server.pem`` / ``server.key`` (0600) — the SuperLink's certificate and key
  (``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem
  --ssl-keyfile server.key``).

The server certificate names every ``--host`` plus ``localhost``, ``127.0.0.1`` and
``::1`` as subject alternative names (clients check the name they dialled against
them). Keys are ECDSA P-384.

``fedsim certs OUT_DIR --operator NAME`` issues, with the existing CA, a client
certificate ``operator-NAME.pem`` / ``operator-NAME.key`` (0600) for a person allowed
to submit runs and manage the federation: the coordinator's Control port accepts only
TLS clients that present a certificate of this CA (:mod:`fedsim.deploy.front`).
"""

from __future__ import annotations

import datetime
import ipaddress
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsim.errors import FedsimError
from fedsim.files import write_atomic

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_OPERATOR_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")


@dataclass(frozen=True)
class CertificateFiles:
    """Where :func:`make_certificates` wrote its files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension with exactly the ``allowed`` flags set."""
    return x509.KeyUsage(**{flag: flag in allowed for flag in _KEY_USAGE_FLAGS})


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Subject alternative names for ``hosts`` plus the loopback names (no duplicates)."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in [*hosts, *LOOPBACK_NAMES]:
        host = host.strip()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _check_hosts(hosts: Sequence[str]) -> None:
    bad = [h for h in hosts if not h.strip() or (any(c in h for c in " /:@") and not _is_ip(h))]
    if bad:
        raise FedsimError(
            f"--host must be a hostname or an IP address (no scheme, port or path); got {bad}"
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def make_certificates(
    out_dir: Path,
    hosts: Sequence[str],
    days: int = 365,
    overwrite: bool = False,
    now: datetime.datetime | None = None,
) -> CertificateFiles:
    """Create a CA and a server certificate for ``hosts`` in ``out_dir``.

    Raises
    ------
    FedsimError
        If a host is malformed, ``days`` < 1, or a file exists and not ``overwrite``.
    """
    _check_hosts(hosts)
    if days < 1:
        raise FedsimError(f"--days must be >= 1; got {days}")
    files = CertificateFiles(
        out_dir / CA_CERT, out_dir / CA_KEY, out_dir / SERVER_CERT, out_dir / SERVER_KEY
    )
    existing = [str(p) for p in vars(files).values() if p.exists()]
    if existing and not overwrite:
        raise FedsimError(
            f"{out_dir}: certificate files exist ({', '.join(existing)}); "
            f"use --overwrite to replace them"
        )
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)

    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = _key()
    common_name = hosts[0] if hosts else "localhost"
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_agreement"),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(files.ca_key, _pem_key(ca_key), mode=0o600)
    write_atomic(files.server_key, _pem_key(server_key), mode=0o600)
    write_atomic(files.ca_cert, _pem_cert(ca_cert), mode=0o644)
    write_atomic(files.server_cert, _pem_cert(server_cert), mode=0o644)
    return files


@dataclass(frozen=True)
class OperatorFiles:
    """Where :func:`make_operator_certificate` wrote an operator's certificate and key."""

    cert: Path
    key: Path


def operator_files(certs_dir: Path, name: str) -> OperatorFiles:
    """The certificate and key paths of operator ``name`` in ``certs_dir``."""
    return OperatorFiles(certs_dir / f"operator-{name}.pem", certs_dir / f"operator-{name}.key")


def make_operator_certificate(
    certs_dir: Path,
    name: str,
    days: int = 365,
    overwrite: bool = False,
    now: datetime.datetime | None = None,
) -> OperatorFiles:
    """Issue a TLS client certificate for operator ``name`` with the CA in ``certs_dir``.

    Raises
    ------
    FedsimError
        If ``name`` is not a plain name, ``days`` < 1, the CA files are missing or
        unreadable, or the operator's files exist and not ``overwrite``.
    """
    if not name or set(name) - _OPERATOR_NAME_CHARS or name.startswith("."):
        raise FedsimError(
            f"--operator must be a plain name (letters, digits, '-', '_', '.'); got {name!r}"
        )
    if days < 1:
        raise FedsimError(f"--days must be >= 1; got {days}")
    ca_cert_path, ca_key_path = certs_dir / CA_CERT, certs_dir / CA_KEY
    missing = [str(p) for p in (ca_cert_path, ca_key_path) if not p.is_file()]
    if missing:
        raise FedsimError(
            f"--operator needs the federation CA: missing {', '.join(missing)} "
            f"(run `fedsim certs {certs_dir}` first)"
        )
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise FedsimError(
            f"{ca_cert_path} / {ca_key_path}: not a CA certificate and key written by "
            "`fedsim certs` (contents not shown)"
        ) from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise FedsimError(f"{ca_key_path}: not an ECDSA key written by `fedsim certs`")
    files = operator_files(certs_dir, name)
    existing = [str(p) for p in (files.cert, files.key) if p.exists()]
    if existing and not overwrite:
        raise FedsimError(
            f"operator files exist ({', '.join(existing)}); use --overwrite to replace them"
        )
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "fedsim operator"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage("digital_signature", "key_agreement"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    write_atomic(files.key, _pem_key(key), mode=0o600)
    write_atomic(files.cert, _pem_cert(cert), mode=0o644)
    return files
