"""Signing documents on the signer's machine: with a key file, or through ssh-agent.

:func:`sign` makes the SSHSIG signature ``ssh-keygen -Y sign -n prodline -f KEY``
makes. An unencrypted ed25519 or RSA key file is signed with in-process, with
``cryptography`` (no ssh-keygen needed, no process to start); both algorithms
are deterministic, so the armored text is byte for byte what ssh-keygen would
print. Anything else goes to ``ssh-keygen`` itself, which knows how: a
passphrase-protected key (ssh-keygen asks for the passphrase on the terminal),
a ``.pub`` file whose private key is in ssh-agent (``SSH_AUTH_SOCK``), other key
types. Only ed25519 and RSA keys can be verified (see :mod:`.verify`), so a
signature made with any other key is refused here, before it is sent.

The SSHSIG blob (PROTOCOL.sshsig in openssh-portable): the magic ``SSHSIG``,
version 1, the public key, the namespace, an empty reserved string, the hash
algorithm (``sha512``) and the signature over ``SSHSIG || string(namespace) ||
string(reserved) || string("sha512") || string(SHA512(message))``; armored as
base64 in 70-column lines between ``-----BEGIN/END SSH SIGNATURE-----``.

The private key never leaves this process (or ssh-keygen, or the agent); no
message here contains key material.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from prodline.errors import InvalidInput
from prodline.identity.documents import NAMESPACE
from prodline.identity.verify import key_problem

MAGIC = b"SSHSIG"
VERSION = 1
HASH = "sha512"
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
ARMOR_WIDTH = 70  # ssh-keygen's line length
# What could make ssh-keygen ask for a passphrase other than on a terminal (a GUI askpass program).
_ASKPASS = ("DISPLAY", "WAYLAND_DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE")


class SigningError(InvalidInput):
    """The document could not be signed; the message names the key file and the fix."""


def sign(text: str, key: Path, *, prompt: bool = True) -> str:
    """The armored SSH signature of ``text``'s UTF-8 bytes with ``key``, in the ``prodline`` namespace.

    ``key`` is a private key file, or a ``.pub`` file whose private key is in
    ssh-agent. With ``prompt=False`` (scripts, no terminal) ssh-keygen runs
    without a controlling terminal or askpass program, so a passphrase-protected
    key fails at once instead of waiting for a passphrase nobody types.
    """
    message = text.encode("utf-8")
    private, encrypted = _load_private(key)
    if isinstance(private, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        return armor(_sshsig(private, message))
    head = _read(key).lstrip()[:200].decode("utf-8", "replace")
    if private is None and not encrypted and not head.startswith("-----BEGIN") and not _looks_public(head):
        # Neither a private key (ssh-keygen would say "No such file" of the .pub it then looks for) nor a .pub.
        raise SigningError(
            f"{key} is not an SSH key file (expected a private key, such as ~/.ssh/id_ed25519, or its .pub)"
        )
    signature = _ssh_keygen_sign(message, key, prompt=prompt, encrypted=encrypted)
    problem = key_problem(_signature_key_line(signature))
    if problem:
        raise SigningError(f"cannot sign with {key}: {problem} (make one with ssh-keygen -t ed25519)")
    return signature


def public_key(key: Path) -> str:
    """The OpenSSH public key line (``ssh-ed25519 AAAA... [comment]``) of a private key file or a ``.pub`` file."""
    data = _read(key)
    line = data.decode("utf-8", "replace").strip().splitlines()[0] if data.strip() else ""
    if _looks_public(line):
        return line
    private, encrypted = _load_private(key)
    if private is not None:
        try:
            return (
                private.public_key()
                .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                .decode()
            )
        except ValueError:  # a key type OpenSSH has no public format for (DH, DSA, ...)
            raise SigningError(f"{key} is not an SSH key (make one with ssh-keygen -t ed25519)") from None
    pub = _pub_path(key)
    if pub.is_file():
        return public_key(pub)
    if encrypted:
        raise SigningError(
            f"{key} is passphrase-protected and {pub} is missing: make it with ssh-keygen -y -f {key} > {pub}"
        )
    raise SigningError(f"{key} is not an SSH key file (expected a private key, such as ~/.ssh/id_ed25519, or its .pub)")


def generate(path: Path, comment: str = "") -> str:
    """Write a new unencrypted ed25519 key pair (``path``, mode 0600, and ``path.pub``); return the public line.

    For tests and demos: a person's real key is theirs to make (``ssh-keygen -t ed25519``).
    An existing file is never overwritten.
    """
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    line = (
        private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )
    if comment:
        line = f"{line} {comment}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path} already exists: choose another path (a key is never overwritten)") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    _pub_path(path).write_text(line + "\n", encoding="utf-8")
    return line


def armor(blob: bytes) -> str:
    """The SSHSIG blob as ssh-keygen armors it."""
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i : i + ARMOR_WIDTH] for i in range(0, len(encoded), ARMOR_WIDTH)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def _sshsig(private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, message: bytes) -> bytes:
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_blob = base64.b64decode(public.split()[1])
    namespace = NAMESPACE.encode()
    signed_data = (
        MAGIC + _string(namespace) + _string(b"") + _string(HASH.encode()) + _string(hashlib.sha512(message).digest())
    )
    if isinstance(private, ed25519.Ed25519PrivateKey):
        signature = _string(b"ssh-ed25519") + _string(private.sign(signed_data))
    else:  # what ssh-keygen uses for RSA: SHA-512, never the SHA-1 "ssh-rsa" signature
        signature = _string(b"rsa-sha2-512") + _string(private.sign(signed_data, padding.PKCS1v15(), hashes.SHA512()))
    return (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob)
        + _string(namespace)
        + _string(b"")
        + _string(HASH.encode())
        + _string(signature)
    )


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read(key: Path) -> bytes:
    try:
        return key.read_bytes()
    except FileNotFoundError:
        raise SigningError(
            f"{key} does not exist: pass your private key (e.g. ~/.ssh/id_ed25519), or its .pub when the key is in ssh-agent"
        ) from None
    except OSError as exc:
        raise SigningError(f"cannot read {key}: {exc.strerror or exc}") from None


def _load_private(key: Path) -> tuple[PrivateKeyTypes | None, bool]:
    """The private key in ``key`` if ``cryptography`` loads it without a passphrase, and whether it is encrypted."""
    data = _read(key)
    try:
        if data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            return serialization.load_ssh_private_key(data, password=None), False
        if data.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in data.split(b"\n", 1)[0]:
            return serialization.load_pem_private_key(data, password=None), False
    except TypeError:  # "private key is encrypted": ssh-keygen asks for the passphrase
        return None, True
    except (ValueError, UnsupportedAlgorithm):  # a format cryptography does not read: ssh-keygen may
        return None, False
    return None, False


def _ssh_keygen_sign(message: bytes, key: Path, *, prompt: bool, encrypted: bool) -> str:
    program = shutil.which("ssh-keygen")
    if program is None:
        raise SigningError(
            f"cannot sign with {key}: ssh-keygen is not installed (it comes with OpenSSH), "
            "and only an unencrypted ed25519 or RSA key file can be used without it"
        )
    env = dict(os.environ)
    if not prompt:
        for name in _ASKPASS:
            env.pop(name, None)
    # Without a controlling terminal (a new session), ssh-keygen cannot wait for a passphrase.
    result = subprocess.run(
        [program, "-Y", "sign", "-n", NAMESPACE, "-f", str(key)],
        input=message,
        capture_output=True,
        env=env,
        start_new_session=not prompt,
        check=False,
    )
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode == 0 and output.startswith(ARMOR_BEGIN):
        return output
    lines = [line.strip() for line in result.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    said = lines[-1] if lines else f"exit status {result.returncode}"
    raise SigningError(f"ssh-keygen could not sign with {key}: {said}{_hint(key, prompt=prompt, encrypted=encrypted)}")


def _hint(key: Path, *, prompt: bool, encrypted: bool) -> str:
    if encrypted and not prompt:
        return f" (a passphrase-protected key needs a terminal to type the passphrase; or run ssh-add {key} and pass {_pub_path(key)})"
    if key.name.endswith(".pub"):
        if not os.environ.get("SSH_AUTH_SOCK"):
            return " (signing with a .pub file needs its private key in ssh-agent, and SSH_AUTH_SOCK is not set)"
        return f" (is its private key in ssh-agent? ssh-add -L lists the agent's keys; add it with ssh-add {key.with_suffix('')})"
    return ""


def _signature_key_line(armored: str) -> str:
    # The public key inside a signature ssh-keygen made, as an OpenSSH line, to check its type.
    body = "".join(line for line in armored.splitlines() if line and not line.startswith("-----"))
    blob = base64.b64decode(body)
    (key_length,) = struct.unpack(">I", blob[10:14])
    key_blob = blob[14 : 14 + key_length]
    (type_length,) = struct.unpack(">I", key_blob[:4])
    key_type = key_blob[4 : 4 + type_length].decode("ascii", "replace")
    return f"{key_type} {base64.b64encode(key_blob).decode('ascii')}"


def _looks_public(line: str) -> bool:
    parts = line.split()
    return len(parts) >= 2 and parts[0].startswith(("ssh-", "ecdsa-", "sk-")) and parts[1].startswith("AAAA")


def _pub_path(key: Path) -> Path:
    return key.with_name(key.name + ".pub")
