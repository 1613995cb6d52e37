"""Two replicas of the notifier on one PostgreSQL database (where replicas run): each receives part of the
alerts, both run their dispatch and delivery loops at the same moments, and every notice goes out once."""

from __future__ import annotations

import asyncio

from services.notifier.service import NotifierService
from shared.lease import Lease
from tests.integration.notifier.test_notifier_service import Harness


async def test_two_replicas_send_each_notice_once(postgres_url, directory, clock, make_received) -> None:
    replicas = [Harness(postgres_url, directory, clock) for _ in range(2)]
    leases = [Lease(r.engine, name="parwatch:notifier") for r in replicas]
    # Forty alerts of one agency, each replica receiving every other one, and a resolution of the first
    # delivered to the replica that did not receive its firing.
    firing = [make_received(f"dossier_overdue:H{i:03d}", event_id=f"f{i}", kind="dossier_overdue",
                            ref=f"H{i:03d}") for i in range(40)]
    await asyncio.gather(*(replicas[i % 2].notifier.record([ev]) for i, ev in enumerate(firing)))
    await replicas[1].notifier.record([make_received("dossier_overdue:H000", event_id="r0", kind="dossier_overdue",
                                                     ref="H000", resolved=True)])

    async def both(seconds: float) -> None:
        now = clock.advance(seconds=seconds)

        def steps(n: NotifierService, lease: Lease) -> list:  # type: ignore[type-arg]
            return [lease.only_when_held(lambda n=n: n.tick(now)), lease.only_when_held(lambda n=n: n.relay.once(now))]

        for k in range(2):  # dispatch on both at once, then delivery on both at once
            await asyncio.gather(*(steps(r.notifier, lease)[k]() for r, lease in zip(replicas, leases, strict=True)))

    for seconds in (0, 30, 600, 600):
        await both(seconds)
    sent = [(who, m.subject) for r in replicas for who, m in r.smtp.sent]
    assert sent == [("ptp-desk", "[parwatch] Phòng Tư pháp: 39 hồ sơ quá hạn")]
    holder = [lease.held() for lease in leases]
    assert sorted(holder) == [False, True]
    assert [len(r.smtp.sent) for r in replicas] == [int(h) for h in holder]  # sent by the replica holding the lease
    for lease in leases:
        lease.release()
    for r in replicas:
        r.engine.dispose()
