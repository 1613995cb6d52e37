"""The ``parwatch`` command.

``parwatch up`` and ``parwatch demo`` run the stack; each service adds its own
operator commands through ``services/<name>/cli.py``, a module with
``register(subparsers)`` that adds sub-commands whose ``func(args) -> int``
does the work.

The operator commands find the demo's data on their own: with no
``PARWATCH_DATA_DIR`` (nor ``PARWATCH_DATABASE_URL``), when ``./var`` holds
no data and ``./var/demo`` does (``make demo`` ran here), they read
``./var/demo`` and say so on stderr
(:func:`shared.settings.demo_data_dir_instead`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

#: Commands that run a stack and choose their own data folder.
STACK_COMMANDS = frozenset({"up", "demo"})

SERVICE_CLIS = (
    "services.dossier_tracker.cli",
    "services.deadline_monitor.cli",
    "services.scoring.cli",
    "services.notifier.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parwatch", description="Watch public-administration service quality.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    up = sub.add_parser("up", help="start the whole stack on embedded defaults (what `make run` does)")
    up.set_defaults(func=_up)
    demo = sub.add_parser("demo", help="start the stack and feed it a synthetic district")
    demo.add_argument("--rate", type=float, default=20.0, help="dossier events per second (default 20)")
    demo.add_argument("--seed", type=int, default=146, help="random seed of the synthetic feed")
    demo.set_defaults(func=_demo)
    from parwatch import contract, importer, keys

    for module in (keys, importer, contract):  # keys add|list|revoke, import, contract export
        module.register(sub)

    for module_name in SERVICE_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that service has no operator commands
            raise
        module.register(sub)
    from parwatch import nats_cli

    nats_cli.register(sub)  # nats-config, streams ensure
    return parser


def _up(args: argparse.Namespace) -> int:
    from parwatch.supervisor import run_stack

    return run_stack()


def _demo(args: argparse.Namespace) -> int:
    from parwatch.demo import run_demo

    return run_demo(rate=args.rate, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    from shared.logs import one_line_handler  # every record one escaped line (shared/logs.py)

    logging.basicConfig(level=logging.INFO,
                        handlers=[one_line_handler("%(asctime)s %(levelname)s %(name)s: %(message)s")])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in STACK_COMMANDS:
        use_demo_data_if_alone()
    return int(args.func(args) or 0)


def use_demo_data_if_alone(environ: dict[str, str] | None = None, *, cwd: Path | None = None) -> Path | None:
    """Point this process's settings at the demo's data folder when it is the only data here, and say so."""
    from shared.settings import demo_data_dir_instead

    environ = os.environ if environ is None else environ
    folder = demo_data_dir_instead(environ, cwd=cwd or Path.cwd())
    if folder is not None:
        environ["PARWATCH_DATA_DIR"] = str(folder)
        print(f"parwatch: reading the demo's data in {folder}/ (./var holds none; set PARWATCH_DATA_DIR "
              "to choose another folder)", file=sys.stderr)
    return folder


if __name__ == "__main__":
    sys.exit(main())
