"""Private files: atomic, owner-only writes, optionally sealed at rest with a passphrase.

:func:`write_private` replaces a file atomically: the bytes go to a temporary file in the
same directory (created 0600 with ``O_EXCL``), are fsynced, renamed over the target, and
the directory is fsynced, so after a crash the target holds either the old or the new
bytes, never a mix. Temporary files carry the writer's process id; a later
:func:`write_private` or :func:`read_private` of the same target removes those whose
process is gone (a ``kill -9`` mid-write leaves one behind, full of key material).

With a passphrase the file is sealed: Argon2id (``nacl.pwhash.argon2id``) derives a key
from the passphrase and a random salt, XChaCha20-Poly1305 encrypts the data with the
header (format, Argon2id limits, salt, nonce, passphrase check) as associated data.
Without a passphrase the caller must say ``insecure_plaintext=True``.

Layout of a sealed file (all integers little-endian)::

    magic "\\x89HEAGGS1" (8) | opslimit u32 | memlimit u64 | salt (16) | nonce (24) |
    check (16) | ciphertext + tag (16)

``check`` is a keyed BLAKE2b of the derived key: it tells a wrong passphrase apart from
a tampered ciphertext and costs an attacker exactly as much as the ciphertext would.
"""

from __future__ import annotations

import hmac
import os
import stat
import struct
from hashlib import blake2b
from pathlib import Path

import nacl.bindings as _aead
import nacl.exceptions
import nacl.pwhash.argon2id as _argon2id

from ..errors import (
    AuthenticationError,
    FormatError,
    HeAggError,
    InsecureFileError,
    ResourceLimitError,
    StateError,
)

__all__ = ["MAX_FILE_BYTES", "SEALED_MAGIC", "read_private", "write_private"]

SEALED_MAGIC = b"\x89HEAGGS1"
MAX_FILE_BYTES = 1 << 28  # 256 MiB: far above any key share (N=32768, 16 primes: 8 MiB)

# Argon2id cost stored in each sealed file. "Moderate" (~0.7 s, 256 MiB) is the default;
# a header may ask for anything between libsodium's minimum and "sensitive" (1 GiB).
_KDF_OPS = _argon2id.OPSLIMIT_MODERATE
_KDF_MEM = _argon2id.MEMLIMIT_MODERATE
_HEADER = struct.Struct("<8sIQ16s24s16s")
_SALT_BYTES = _argon2id.SALTBYTES
_NONCE_BYTES = _aead.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_TAG_BYTES = _aead.crypto_aead_xchacha20poly1305_ietf_ABYTES
_TMP_MARK = ".tmp-"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# -- writing -------------------------------------------------------------------------------


def write_private(path: str | os.PathLike[str], data: bytes, *, passphrase: bytes | None = None,
                  insecure_plaintext: bool = False) -> None:
    """Atomically replace ``path`` with ``data`` (mode 0600, fsynced, directory fsynced).

    ``passphrase`` seals the file at rest; without one, ``insecure_plaintext=True`` is
    required. Raises :class:`InsecureFileError` for an unprotected write not asked for,
    :class:`StateError` when the file cannot be written (the previous file is intact).
    """
    target = Path(path)
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES - _HEADER.size - _TAG_BYTES:
        raise ResourceLimitError(f"{len(data)} bytes is more than a private file may hold ({MAX_FILE_BYTES})")
    if passphrase is None:
        if not insecure_plaintext:
            raise InsecureFileError(
                f"refusing to write {target} unencrypted: pass passphrase=… to seal it at rest, or "
                "insecure_plaintext=True if the disk itself is protected"
            )
        if data.startswith(SEALED_MAGIC):
            raise FormatError("plaintext data may not begin with the sealed-file magic")
        payload = data
    else:
        payload = _seal(data, _check_passphrase(passphrase))
    remove_stale_temporaries(target)
    _atomic_replace(target, payload)


def _atomic_replace(target: Path, payload: bytes) -> None:
    directory = target.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the directory {directory}: {exc.strerror}") from exc
    tmp = directory / f".{target.name}{_TMP_MARK}{os.getpid()}-{os.urandom(6).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_directory(directory)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StateError(
            f"could not write {target} ({exc.strerror or exc}); the previous version, if any, is intact — "
            "free disk space or fix the directory's permissions and retry"
        ) from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files of ``target`` whose writing process no longer exists.

    Returns the paths removed. A live writer's temporary file is left alone.
    """
    target = Path(target)
    prefix = f".{target.name}{_TMP_MARK}"
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            _unlink_quietly(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    except (OverflowError, OSError):
        return False
    return True


# -- reading -------------------------------------------------------------------------------


def read_private(path: str | os.PathLike[str], *, passphrase: bytes | None = None,
                 max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes written by :func:`write_private`; unsealed when ``passphrase`` is given.

    Refuses a symlink or a file readable by group or others (:class:`InsecureFileError`),
    a sealed file without passphrase or a plaintext file when a passphrase is given, a
    wrong passphrase or altered file (:class:`AuthenticationError`), a file above
    ``max_bytes`` (:class:`ResourceLimitError`).
    """
    target = Path(path)
    remove_stale_temporaries(target)
    raw = _read_checked(target, max_bytes)
    if raw.startswith(SEALED_MAGIC):
        if passphrase is None:
            raise AuthenticationError(f"{target} is sealed with a passphrase: pass passphrase=… to read it")
        return _open_sealed(raw, _check_passphrase(passphrase), target)
    if passphrase is not None:
        raise AuthenticationError(
            f"{target} is not sealed, but a passphrase was given: the file may have been replaced by an "
            "unprotected one; check where it came from before using it"
        )
    return raw


def _read_checked(target: Path, max_bytes: int) -> bytes:
    try:
        fd = os.open(target, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError as exc:
        if target.is_symlink():
            raise InsecureFileError(f"{target} is a symbolic link; private files must be regular files") from None
        raise StateError(f"cannot open {target}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InsecureFileError(f"{target} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise InsecureFileError(
                f"{target} is accessible by group or others (mode {mode:03o}); run `chmod 600 {target}` "
                "and consider the secret in it exposed"
            )
        if info.st_size > max_bytes:
            raise ResourceLimitError(f"{target} has {info.st_size} bytes, more than the cap of {max_bytes}")
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise ResourceLimitError(f"{target} grew beyond the cap of {max_bytes} bytes while being read")
        return data
    except HeAggError:
        raise  # InsecureFileError is also an OSError (PermissionError)
    except OSError as exc:
        raise StateError(f"cannot read {target}: {exc.strerror}") from exc
    finally:
        os.close(fd)


# -- sealing -------------------------------------------------------------------------------


def _check_passphrase(passphrase: bytes) -> bytes:
    if not isinstance(passphrase, (bytes, bytearray)) or not passphrase:
        raise InsecureFileError("the passphrase must be non-empty bytes")
    return bytes(passphrase)


def _derive(passphrase: bytes, salt: bytes, ops: int, mem: int) -> tuple[bytes, bytes]:
    key = _argon2id.kdf(32, passphrase, salt, opslimit=ops, memlimit=mem)
    check = blake2b(b"", key=key, digest_size=16, person=b"he_agg.pw.check").digest()
    return key, check


def _seal(data: bytes, passphrase: bytes) -> bytes:
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    key, check = _derive(passphrase, salt, _KDF_OPS, _KDF_MEM)
    header = _HEADER.pack(SEALED_MAGIC, _KDF_OPS, _KDF_MEM, salt, nonce, check)
    return header + _aead.crypto_aead_xchacha20poly1305_ietf_encrypt(data, header, nonce, key)


def _open_sealed(raw: bytes, passphrase: bytes, target: Path) -> bytes:
    if len(raw) < _HEADER.size + _TAG_BYTES:
        raise FormatError(f"{target} is a truncated sealed file")
    header = raw[: _HEADER.size]
    _, ops, mem, salt, nonce, check = _HEADER.unpack(header)
    if not (_argon2id.OPSLIMIT_MIN <= ops <= _argon2id.OPSLIMIT_SENSITIVE
            and _argon2id.MEMLIMIT_MIN <= mem <= _argon2id.MEMLIMIT_SENSITIVE):
        raise FormatError(f"{target}: the sealed header asks for Argon2id limits out of range (altered file?)")
    key, expected = _derive(passphrase, salt, ops, mem)
    if not hmac.compare_digest(check, expected):
        raise AuthenticationError(f"wrong passphrase for {target} (or its header was altered)")
    try:
        return _aead.crypto_aead_xchacha20poly1305_ietf_decrypt(raw[_HEADER.size:], header, nonce, key)
    except nacl.exceptions.CryptoError:
        raise AuthenticationError(
            f"{target} was altered or corrupted: the passphrase is right but the contents do not authenticate; "
            "restore it from a backup"
        ) from None
