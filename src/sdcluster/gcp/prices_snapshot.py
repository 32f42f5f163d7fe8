"""Regenerate the price snapshot shipped with sdcluster from the Cloud Billing Catalog API.

    python -m sdcluster.gcp.prices_snapshot --out src/sdcluster/data/prices_snapshot.json

It lists the Catalog's services, keeps the SKUs an estimate can use (the same selection plan and
status read live: ``prices.kept``) in the given regions (default us-central1) plus the global and
multi-region ones, and writes them in the Catalog's JSON shape with the date they were read. It uses
Application Default Credentials, or the emulator when ``SDCLUSTER_EMULATOR`` / ``--emulator`` is set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import SdclusterError
from ..state import atomic_write
from .clients import ClientFactory
from .prices import CATALOG, GLOBAL, fetch_catalog

FORMAT = "sdcluster-price-snapshot/1"
MULTI_REGIONS = ("us", "eu", "asia")


def snapshot(factory: ClientFactory, regions: Iterable[str], today: dt.date | None = None) -> dict[str, Any]:
    """The snapshot document: the kept SKUs of ``regions`` (and global, multi-region ones)."""
    where = {*regions, GLOBAL, *MULTI_REGIONS}
    services, skus = fetch_catalog(factory)
    date = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    return {
        "format": FORMAT,
        "as_of": date,
        "source": f"{CATALOG}, read by python -m sdcluster.gcp.prices_snapshot",
        "currency": "USD",
        "notes": [f"SKUs of {', '.join(sorted(where))} as the {CATALOG} listed them on {date}."],
        "sources": {
            "catalog": {
                "url": "https://cloudbilling.googleapis.com/v1/services",
                "what": "ListServices and ListSkus (currency USD)",
                "date": date,
            }
        },
        "services": services,
        "skus": [s for s in skus if where & set(s.get("serviceRegions") or [])],
        "citations": {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdcluster.gcp.prices_snapshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="where to write the snapshot (JSON)")
    parser.add_argument(
        "--region", action="append", default=[], help="a region to keep (repeatable; default us-central1)"
    )
    parser.add_argument(
        "--emulator", default=None, help="HOST:PORT of an sdcluster emulator (default: $SDCLUSTER_EMULATOR)"
    )
    parser.add_argument(
        "--user", default=None, help="the member to call as on the emulator (default: its owner)"
    )
    args = parser.parse_args(argv)
    factory = ClientFactory.for_user(args.user, args.emulator)
    try:
        if factory.emulator and not factory.user:
            factory.user = str(factory.emulator_info()["owner"])
        doc = snapshot(factory, args.region or ["us-central1"])
    except SdclusterError as e:
        print(f"Error: {e}", file=sys.stderr)
        if e.hint:
            print(f"Hint: {e.hint}", file=sys.stderr)
        return 1
    atomic_write(args.out, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"Wrote {len(doc['skus'])} SKUs of {len(doc['services'])} services to {args.out} ({doc['as_of']}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
