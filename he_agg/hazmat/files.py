"""TEMPORARY stub of he_agg.hazmat.files until the real module lands."""
from __future__ import annotations
import os
from pathlib import Path
from ..errors import InsecureFileError


def write_private(path, data: bytes, *, passphrase=None, insecure_plaintext=False) -> None:
    if passphrase is None and not insecure_plaintext:
        raise InsecureFileError("pass a passphrase, or insecure_plaintext=True")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_private(path, *, passphrase=None) -> bytes:
    path = Path(path)
    if path.stat().st_mode & 0o077:
        raise InsecureFileError(f"{path} is readable by others; chmod 600 it")
    return path.read_bytes()
