"""``prodline setup``: make an existing Temporal namespace ready for releases (once; safe to repeat)."""

from __future__ import annotations

import argparse

from prodline.client import ReleaseClient

from . import exit_codes
from .common import connected, emit


@connected
async def run(args: argparse.Namespace, client: ReleaseClient) -> int:
    done = await client.register_search_attributes()
    where = f"namespace {done.namespace!r}"
    if done.added:
        text = f"registered search attributes {', '.join(done.added)} (Keyword) on {where}"
        if done.present:
            text += f"; already there: {', '.join(done.present)}"
    else:
        text = f"{where} already has prodline's search attributes ({', '.join(done.present)}); nothing to do"
    emit(args, {"namespace": done.namespace, "added": done.added, "present": done.present}, text)
    return exit_codes.SUCCEEDED
