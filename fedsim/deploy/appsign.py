"""Which apps a site runs: Ed25519 signatures over the files of a Flower app bundle (FAB).

Flower 1.41's own app verification (``flower-supernode --trusted-entities``) only covers
apps fetched from Flower Hub: a FAB that ``flwr run .`` builds carries no verification
and such a SuperNode refuses it. fedsim therefore signs apps itself:

- ``fedsim app keygen KEY`` writes an Ed25519 key pair (``KEY``, 0600, and ``KEY.pub``,
  both OpenSSH format); the public key goes to every site.
- ``fedsim app sign --key KEY [APP_DIR]`` builds the FAB exactly as ``flwr run .`` does
  (Flower's own :func:`flwr.cli.build.build_fab_from_disk`), computes the
  :func:`app_digest` of its members and writes :data:`SIGNATURE_FILE` into the app
  directory; ``pyproject.toml`` includes that file in every FAB.
- A site started with ``fedsim supernode --trusted-keys FILE`` checks every FAB with
  :func:`verify_fab` before any of its code runs (:mod:`fedsim.deploy.supernode`).

The digest covers every member of the FAB — name and SHA-256 of its bytes, in archive
order — except :data:`SIGNATURE_FILE` itself and Flower's derived manifest
``.info/CONTENT``. Adding, removing, renaming or changing any other file (code, configs,
``pyproject.toml`` with its entry points) breaks the signature; so do duplicate members.
The run config that ``flwr run --run-config`` sends is not part of the FAB: a site's
privacy policy (:mod:`fedsim.deploy.policy`) governs it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedsim.deploy.nodekeys import KeyFiles, write_key_pair
from fedsim.errors import FedsimError
from fedsim.files import write_atomic

#: The signature file, at the app's root and in every FAB.
SIGNATURE_FILE = "app-signature.json"
#: Flower's manifest of the FAB's members: derived from them, so not signed itself.
FAB_MANIFEST = ".info/CONTENT"
_UNSIGNED = frozenset({SIGNATURE_FILE, FAB_MANIFEST})
_DOMAIN = b"fedsim app signature v1\n"
#: Largest signature file read.
_MAX_SIGNATURE_BYTES = 16 * 1024


class AppRefusedError(FedsimError):
    """A FAB that a site must not run; the message says why (never the FAB's contents)."""


AppKeyFiles = KeyFiles


def make_app_key(path: Path, comment: str = "", overwrite: bool = False) -> KeyFiles:
    """Write a new Ed25519 key pair to ``path`` (private, 0600) and ``path.pub``.

    Raises
    ------
    FedsimError
        If a key file exists and not ``overwrite``.
    """
    return write_key_pair(path, ed25519.Ed25519PrivateKey.generate(), comment, overwrite)


def key_id(public: ed25519.Ed25519PublicKey) -> str:
    """A short, stable name of a public key: SHA-256 of its raw bytes, first 16 hex digits."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Read an Ed25519 private key (OpenSSH or PEM) written by ``fedsim app keygen``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FedsimError(f"--key {str(path)!r} cannot be read: {exc.strerror}") from None
    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    for loader in loaders:
        try:
            key = loader(data, password=None)
        except (ValueError, TypeError):
            continue
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
    raise FedsimError(
        f"--key {str(path)!r} must be an unencrypted Ed25519 private key from "
        "`fedsim app keygen` (contents not shown)"
    )


def load_trusted_keys(path: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """The Ed25519 public keys in ``path`` (OpenSSH lines; ``#`` comments), by key id.

    Raises
    ------
    FedsimError
        If the file cannot be read, a line is not an Ed25519 public key (named by its
        line number, contents not shown), or there is no key at all.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise FedsimError(f"--trusted-keys {str(path)!r} cannot be read: {reason}") from None
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = serialization.load_ssh_public_key(line.encode())
        except (ValueError, TypeError, UnicodeEncodeError):
            key = None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise FedsimError(
                f"--trusted-keys {str(path)!r} line {number}: not an ssh-ed25519 public key "
                "from `fedsim app keygen` (contents not shown)"
            )
        keys[key_id(key)] = key
    if not keys:
        raise FedsimError(f"--trusted-keys {str(path)!r} holds no public key")
    return keys


def _members(fab: bytes) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            return [(info.filename, archive.read(info)) for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError) as exc:
        raise AppRefusedError(
            f"the app bundle is not a readable zip archive ({type(exc).__name__})"
        ) from None


def app_digest(members: list[tuple[str, bytes]]) -> bytes:
    """SHA-256 over each signed member's name and content hash, in archive order.

    Raises
    ------
    AppRefusedError
        If a member name occurs twice.
    """
    names = [name for name, _ in members]
    if len(set(names)) != len(names):
        raise AppRefusedError("the app bundle holds a file name twice")
    digest = hashlib.sha256(_DOMAIN)
    for name, content in members:
        if name in _UNSIGNED:
            continue
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
        digest.update(hashlib.sha256(content).digest())
    return digest.digest()


def build_fab(app_dir: Path) -> bytes:
    """The FAB ``flwr run`` would build from ``app_dir`` (Flower's own build code)."""
    from flwr.cli.build import build_fab_from_disk

    try:
        return build_fab_from_disk(app_dir)
    except Exception as exc:  # Flower raises ValueError, click errors and its own types
        raise FedsimError(f"cannot build the app in {app_dir}: {exc}") from None


def sign_app(app_dir: Path, key_path: Path) -> tuple[Path, str, int]:
    """Sign the app in ``app_dir``: write :data:`SIGNATURE_FILE` there.

    Returns the signature file, the key id and the number of signed files.

    Raises
    ------
    FedsimError
        If the key cannot be loaded, the app cannot be built, or its FAB would not carry
        the signature file (``pyproject.toml``'s ``fab-include`` must list it).
    """
    key = load_private_key(key_path)
    members = _members(build_fab(app_dir))
    if SIGNATURE_FILE not in {name for name, _ in members}:
        raise FedsimError(
            f"{app_dir}: the app's FAB would not include {SIGNATURE_FILE}; add "
            f'"/{SIGNATURE_FILE}" to fab-include in [tool.flwr.app] and create the file'
        )
    digest = app_digest(members)
    signature = key.sign(digest)
    kid = key_id(key.public_key())
    files = sorted(name for name, _ in members if name not in _UNSIGNED)
    document = {
        "fedsim-app-signature": 1,
        "key-id": kid,
        "digest": digest.hex(),
        "signature": base64.b64encode(signature).decode("ascii"),
        "files": files,
    }
    target = app_dir / SIGNATURE_FILE
    write_atomic(target, (json.dumps(document, indent=1) + "\n").encode(), mode=0o644)
    # the signature file is excluded from the digest: the FAB built now still matches
    if app_digest(_members(build_fab(app_dir))) != digest:
        raise FedsimError(f"{app_dir}: the app changed while it was signed; sign it again")
    return target, kid, len(files)


def verify_fab(fab: bytes, trusted: dict[str, ed25519.Ed25519PublicKey]) -> str:
    """Check that ``fab`` is signed by one of the ``trusted`` keys; returns its key id.

    Raises
    ------
    AppRefusedError
        Unsigned, signed by an unknown key, altered after signing, or malformed. The
        message says which, and never shows the bundle's contents.
    """
    members = _members(fab)
    found = [content for name, content in members if name == SIGNATURE_FILE]
    digest = app_digest(members)  # also refuses duplicate names
    if not found:
        raise AppRefusedError(f"the app is not signed (no {SIGNATURE_FILE})")
    raw = found[0]
    if len(raw) > _MAX_SIGNATURE_BYTES:
        raise AppRefusedError(f"{SIGNATURE_FILE} is too large to be a signature")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AppRefusedError(f"{SIGNATURE_FILE} is not JSON") from None
    if not isinstance(document, dict) or document.get("fedsim-app-signature") != 1:
        raise AppRefusedError("the app is not signed (no fedsim signature in its signature file)")
    kid, encoded = document.get("key-id"), document.get("signature")
    if not isinstance(kid, str) or not isinstance(encoded, str):
        raise AppRefusedError(f"{SIGNATURE_FILE} lacks key-id or signature")
    key = trusted.get(kid)
    if key is None:
        raise AppRefusedError(
            f"the app is signed by key {kid[:16]!r}, which this site does not trust"
        )
    try:
        key.verify(base64.b64decode(encoded, validate=True), digest)
    except (InvalidSignature, ValueError):
        raise AppRefusedError(
            f"the app's signature by key {kid!r} does not match its files "
            "(altered after signing, or a forged signature)"
        ) from None
    return kid
