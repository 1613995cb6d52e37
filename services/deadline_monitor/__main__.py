"""``python -m services.deadline_monitor``."""

from services.deadline_monitor.app import NAME, create_app
from shared.service import main

if __name__ == "__main__":
    main(NAME, create_app)
