"""`python -m datago.dataroom_server --root FOLDER`: serve a folder as a dataroom API."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from aiohttp import web

from datago.dataroom_server.app import make_app

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a folder until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m datago.dataroom_server",
        description="Serve a folder of images as a dataroom-compatible API.",
    )
    parser.add_argument("--root", required=True, help="folder of images to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None, help="require 'Authorization: Token <token>'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logger.info("set DATAROOM_API_URL=http://%s:%d/api/", args.host, args.port)
    web.run_app(make_app(args.root, token=args.token), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
