"""``parwatch nats-config`` and ``parwatch streams ensure``: setting up a deployment's NATS.

* ``parwatch nats-config --out DIR`` writes (or brings up to date) a
  deployment's server config, nkeys and certificates (:mod:`parwatch.nats_config`);
* ``parwatch streams ensure`` creates parwatch's streams, or brings their
  settings up to date, with the credential of the environment: the admin's
  (``PARWATCH_NATS_NKEY_SEED_FILE=.../creds/admin.nk``). The services' own
  credentials may only check them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = subparsers.add_parser(
        "nats-config",
        help="write a deployment's NATS server config, credentials and certificates",
        description="Write into OUT the NATS server config (cluster, JetStream, TLS on client and route ports), "
        "one nkey credential per service, admin, operator and publisher, and a CA with a certificate per node. "
        "Run again to change it: existing keys and certificates are kept. Secrets are never printed.",
    )
    config.add_argument("--out", type=Path, required=True, help="the deployment folder (created if missing)")
    config.add_argument("--node", action="append", default=[], metavar="HOST",
                        help="a NATS node's host name, once per node (default: nats-1, nats-2, nats-3 as in compose)")
    config.add_argument("--san", action="append", default=[], metavar="NAME",
                        help="another name or address clients use to reach the nodes (every node's certificate)")
    config.add_argument("--publisher", action="append", default=[], metavar="NAME",
                        help="add a publisher credential (one per integrating system, named after its source)")
    config.add_argument("--remove-publisher", action="append", default=[], metavar="NAME",
                        help="remove a publisher's credential (reload the servers to cut it off)")
    config.add_argument("--rotate", action="append", default=[], metavar="ROLE",
                        help="new key for ROLE; the old one stays valid until --finish-rotation ROLE")
    config.add_argument("--finish-rotation", action="append", default=[], metavar="ROLE",
                        help="drop ROLE's previous key (after every process of ROLE uses the new one)")
    config.add_argument("--conf-dir", default="/etc/nats", help="where the nodes find the config (default /etc/nats)")
    config.add_argument("--store-dir", default="/data", help="JetStream's store on the nodes (default /data)")
    config.set_defaults(func=_nats_config)

    streams = subparsers.add_parser("streams", help="parwatch's JetStream streams")
    actions = streams.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ensure = actions.add_parser(
        "ensure",
        help="create the streams or bring their settings up to date (with the admin credential)",
        description="Create every missing stream with parwatch's limits and bring existing ones up to what "
        "parwatch needs, keeping an operator's limits. Uses PARWATCH_NATS_URL and the credential of the environment "
        "(PARWATCH_NATS_NKEY_SEED_FILE: the admin's, PARWATCH_NATS_TLS_CA_FILE).",
    )
    ensure.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for NATS (default 60)")
    ensure.set_defaults(func=_streams_ensure)


def _nats_config(args: argparse.Namespace) -> int:
    from parwatch.nats_config import NatsConfigError, Request, ServerLayout, summary, write_deployment

    request = Request(
        nodes=tuple(args.node) or Request().nodes,
        sans=tuple(args.san),
        publishers=tuple(args.publisher),
        remove_publishers=tuple(args.remove_publisher),
        rotate=tuple(args.rotate),
        finish_rotation=tuple(args.finish_rotation),
        layout=ServerLayout(conf_dir=args.conf_dir, store_dir=args.store_dir),
    )
    try:
        written = write_deployment(args.out, request)
    except NatsConfigError as exc:
        print(f"parwatch nats-config: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary(args.out, written)))
    return 0


def _streams_ensure(args: argparse.Namespace) -> int:
    from parwatch.supervisor import StartupError, _ensure_streams
    from shared.settings import CommonSettings

    common = CommonSettings()
    specs = common.stream_specs()
    try:
        asyncio.run(_ensure_streams(common.nats_servers(), replicas=common.stream_replicas, specs=specs,
                                    timeout=args.timeout, auth=common.nats_auth()))
    except StartupError as exc:
        print(f"parwatch streams ensure: {exc}", file=sys.stderr)
        return 1
    print(f"streams ready ({common.stream_replicas} replica(s)): {', '.join(s.name for s in specs)}")
    return 0
