"""``python -m he_agg.flower identity STATE_DIR``: create (or show) a training client's long-lived
identity and print the line its member operators add to their allow-list file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import HeAggError
from .node import load_identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m he_agg.flower")
    sub = parser.add_subparsers(dest="command", required=True)
    ident = sub.add_parser("identity", help="create or show a client node's identity")
    ident.add_argument("state_dir", type=Path, help="the node's state-dir (as in its node config)")
    ident.add_argument("--client-id", required=True, help="the node's client-id")
    ident.add_argument("--passphrase-env", default="HE_AGG_PASSPHRASE")
    ident.add_argument("--insecure-plaintext", action="store_true", help="write the key unsealed (tests only)")
    args = parser.parse_args(argv)
    passphrase = os.environ.get(args.passphrase_env)
    if not passphrase and not args.insecure_plaintext:
        parser.error(f"set ${args.passphrase_env} (or pass --insecure-plaintext)")
    try:
        identity = load_identity(args.state_dir, passphrase=passphrase.encode() if passphrase else None)
    except HeAggError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.client_id} {identity.public_key.hex()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
