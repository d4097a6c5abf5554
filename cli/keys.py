"""``--key`` and ``--valid-for``: the signer a command's arguments ask for, checked before anything is sent."""

from __future__ import annotations

import argparse
from pathlib import Path

from prodline.client.signatures import Signer, has_terminal
from prodline.errors import InvalidInput


def signer_from(args: argparse.Namespace, by: str) -> Signer | None:
    """The signer for ``--key`` (None without it); InvalidInput (exit 2) for an unusable key or validity."""
    if args.key is None:
        if args.valid_for is not None:
            raise InvalidInput("--valid-for applies to a signature: give --key too (see `prodline --help`)")
        return None
    key = Path(args.key)
    prompt = has_terminal()
    signer = (
        Signer(key, by=by, prompt=prompt) if args.valid_for is None else Signer(key, args.valid_for, by, prompt=prompt)
    )
    signer.check()
    return signer
