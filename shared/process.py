"""What every parwatch process does once started, kept free of the web and broker stack.

The tracker's store process calls it too, and should not have to import
FastAPI and uvicorn to do so.
"""

from __future__ import annotations

import gc


def settle_garbage_collector() -> None:
    """Once a process has loaded what it keeps (modules, engines, caches): stop scanning it.

    CPython's cycle collector now and then walks every tracked object, the
    libraries' included, and a batch allocates tens of thousands of
    short-lived containers: the tracker's store spent about a sixth of its time
    collecting (docs/benchmarks.md). ``gc.freeze()`` moves what exists at the
    end of startup out of the collector's sight; cycles made later are still
    collected on the usual schedule (raising the thresholds as well bought
    nothing more and let garbage pile up: the service's memory grew by half).
    """
    gc.freeze()
