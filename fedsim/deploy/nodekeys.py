"""SuperNode authentication keys in the format Flower 1.41 expects.

With ``flower-superlink --enable-supernode-auth`` only SuperNodes whose public key was
registered (``flwr supernode register KEY.pub CONNECTION``, through the SuperLink's
Control API) may join. A SuperNode proves it holds the private key
(``flower-supernode --auth-supernode-private-key KEY``). Flower reads both in OpenSSH
format and accepts only elliptic-curve keys on NIST curves; this module writes ECDSA
P-384 keys: ``NAME`` (private, mode 0600) and ``NAME.pub``, as ``ssh-keygen -t ecdsa
-b 384 -N ''`` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedsim.errors import FedsimError
from fedsim.files import write_atomic


@dataclass(frozen=True)
class KeyFiles:
    """The private and public key file of one key pair (a SuperNode's or an app signer's)."""

    private: Path
    public: Path


NodeKeyFiles = KeyFiles


def write_key_pair(
    path: Path,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    comment: str = "",
    overwrite: bool = False,
    replaced: str = "",
) -> KeyFiles:
    """Write ``key`` to ``path`` (OpenSSH private key, 0600) and ``path.pub`` (OpenSSH
    public key with ``comment``), creating the folder.

    Raises
    ------
    FedsimError
        If a key file exists and not ``overwrite`` (``replaced`` says what replacing costs).
    """
    files = KeyFiles(path, path.with_name(path.name + ".pub"))
    existing = [str(p) for p in (files.private, files.public) if p.exists()]
    if existing and not overwrite:
        raise FedsimError(
            f"key file(s) exist: {', '.join(existing)}; use --overwrite to replace them{replaced}"
        )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if comment:
        public += b" " + comment.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(files.private, private, mode=0o600)
    write_atomic(files.public, public + b"\n", mode=0o644)
    return files


def make_node_key(path: Path, comment: str = "", overwrite: bool = False) -> KeyFiles:
    """Write a new ECDSA P-384 key pair to ``path`` (private) and ``path.pub`` (public).

    Raises
    ------
    FedsimError
        If a key file exists and not ``overwrite``.
    """
    return write_key_pair(
        path,
        ec.generate_private_key(ec.SECP384R1()),
        comment,
        overwrite,
        " (a replaced key must be registered again)",
    )
