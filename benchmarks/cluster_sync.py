"""What `sync_interval: always` costs on a 3-node cluster: publishing and dossier_tracker's ingest.

Starts three nats-servers from the wheel in a cluster on loopback (JetStream
on file storage, parwatch's streams with 3 replicas, as deploy/ runs them),
once with nats-server's default sync (a flush every two minutes) and once
with `sync_interval: always` (every write fsynced before it is acked), in
alternating rounds so that the machine's drift falls on both. Each round:

- prepublishes N dossier events with JetStream acks, 2,000 in flight (the
  rate a one-stop-shop system's backlog gets in);
- runs dossier_tracker (`python -m services.dossier_tracker`, SQLite, its
  defaults, streams with 3 replicas) until its consumer has drained them, and
  times it from the moment it answers on its port.

Prints events/s for both and the ratio always / default.

    .venv/bin/python benchmarks/cluster_sync.py                 # 50,000 events, 2 rounds
    .venv/bin/python benchmarks/cluster_sync.py --events 20000 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ingest import Tracker, generate, pending, wait_drained  # noqa: E402

from shared.embedded import free_port, nats_server_binary, stop_process, wait_for_port  # noqa: E402
from shared.testing import machine_description, prepublish_dossier_events  # noqa: E402

CONF = """server_name: n{i}
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  {sync}
}}
cluster {{
  name: bench
  listen: 127.0.0.1:{cluster_port}
  routes: [{routes}]
}}
"""


def start_cluster(work: Path, *, sync_always: bool) -> tuple[list[subprocess.Popen[bytes]], str]:
    ports = [free_port() for _ in range(3)]
    cluster_ports = [free_port() for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports)
    procs = []
    for i in range(3):
        conf = work / f"n{i}.conf"
        conf.write_text(CONF.format(i=i, port=ports[i], store=work / f"store{i}", cluster_port=cluster_ports[i],
                                    routes=routes, sync="sync_interval: always" if sync_always else ""))
        procs.append(subprocess.Popen([str(nats_server_binary()), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    for port in ports:
        wait_for_port("127.0.0.1", port)
    return procs, ",".join(f"nats://127.0.0.1:{p}" for p in ports)


async def publish_when_ready(url: str, payloads: list[bytes]) -> float:
    """Prepublish once the cluster has a JetStream leader (stream creation fails until it has)."""
    for _ in range(60):
        try:
            return await prepublish_dossier_events(url, payloads, replicas=3)
        except Exception:  # no meta leader yet: the cluster is still forming  # noqa: BLE001
            await asyncio.sleep(1.0)
    raise RuntimeError("the cluster never elected a JetStream leader")


async def one_round(payloads: list[bytes], *, sync_always: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="parwatch-sync-") as tmp:
        work = Path(tmp)
        procs, url = start_cluster(work, sync_always=sync_always)
        try:
            took = await publish_when_ready(url, payloads)
            tracker = Tracker(url, f"sqlite:///{work / 'tracker.db'}", work)
            tracker.env |= {"PARWATCH_STREAM_REPLICAS": "3"}
            await asyncio.to_thread(tracker.start)
            try:
                ready = asyncio.get_running_loop().time()
                left = await pending(url, tracker.durable)
                await wait_drained(url, tracker.durable)
                drained = asyncio.get_running_loop().time() - ready
            finally:
                await asyncio.to_thread(tracker.stop)
            return len(payloads) / took, left / drained
        finally:
            for proc in procs:
                stop_process(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine_description()}")
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    payloads = generate(args.events)
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(args.rounds):
        for sync_always in (False, True):
            publish, ingest = await one_round(payloads, sync_always=sync_always)
            rates[sync_always].append((publish, ingest))
            name = "sync_interval: always" if sync_always else "default sync"
            print(f"round {i + 1}, {name}: publish {publish:,.0f} ev/s, tracker ingest {ingest:,.0f} ev/s")
    for what, k in (("publish", 0), ("tracker ingest", 1)):
        default = statistics.median(r[k] for r in rates[False])
        always = statistics.median(r[k] for r in rates[True])
        print(f"{what}: default {default:,.0f} ev/s, always {always:,.0f} ev/s, ratio always/default "
              f"{always / default:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PARWATCH_LOG_LEVEL", "WARNING")
    asyncio.run(main())
