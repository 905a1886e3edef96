"""Run fakesnow's server with its data persisted in DuckDB files under --db-path.

``fakesnow -s`` ignores ``-d`` in server mode (everything is lost when it stops), so this
launcher installs a persistent shared instance before starting the server, and closes the DuckDB
connection on SIGTERM so the write-ahead log is checkpointed.
"""

from __future__ import annotations

import argparse
import logging

import fakesnow.server
import uvicorn
from fakesnow.instance import FakeSnow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--db-path", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    fakesnow.server.shared_fs = FakeSnow(db_path=args.db_path)
    server = uvicorn.Server(
        uvicorn.Config(fakesnow.server.app, host=args.host, port=args.port, log_level="warning")
    )
    try:
        server.run()  # uvicorn handles SIGTERM/SIGINT and returns
    finally:
        fakesnow.server.shared_fs.duck_conn.execute("CHECKPOINT")
        fakesnow.server.shared_fs.duck_conn.close()


if __name__ == "__main__":
    main()
