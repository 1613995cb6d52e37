"""``python -m services.scoring``: the process-wide choices, then the service until a signal."""

import gc

from prometheus_client import disable_created_metrics

from services.scoring.app import NAME, create_app
from shared.service import run_service


def main() -> None:
    disable_created_metrics()  # `_created` series would double every counter's series for little use
    gc.freeze()  # what the imports loaded lives as long as the process: out of the cycle collector's sight
    run_service(NAME, create_app)


if __name__ == "__main__":
    main()
