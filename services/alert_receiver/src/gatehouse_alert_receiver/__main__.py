"""Entry point: `python -m gatehouse_alert_receiver` serves until SIGTERM or SIGINT."""

from __future__ import annotations

import uvicorn

from gatehouse_alert_receiver.app import create_app
from gatehouse_alert_receiver.settings import Settings
from gatehouse_kit.logging import configure_logging


def main() -> None:
    """Serve the receiver on `ALERT_RECEIVER_BIND_HOST:ALERT_RECEIVER_HTTP_PORT`."""
    settings = Settings()
    configure_logging("alert-receiver", settings.log_level, settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.bind_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
