"""Clients that loop maximum-size requests at a runtime until stopped (a separate process).

``python heavy_clients.py URL CLIENTS BODY_FILE CONTENT_TYPE [PATH]``: each client thread
posts the body to ``URL/PATH`` (``/invocations`` by default) on its own keep-alive
connection, again and again. The
process prints ``started`` once every client has sent its first request, and on SIGTERM
prints the count of answers per status as JSON. It runs apart from the test so that
its own work never slows the probe measurements.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
from collections import Counter
from urllib.parse import urlsplit


def main() -> None:
    """Loop the requests until SIGTERM; print the status counts."""
    url, clients, body_file, content_type = sys.argv[1:5]
    path = sys.argv[5] if len(sys.argv) > 5 else "/invocations"
    with open(body_file, "rb") as handle:
        body = handle.read()
    parts = urlsplit(url)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    sent = threading.Barrier(int(clients) + 1)

    def client() -> None:
        first = True
        while not stop.is_set():
            connection = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=120
            )
            try:
                while not stop.is_set():
                    connection.request("POST", path, body, {"Content-Type": content_type})
                    if first:
                        first = False
                        sent.wait()
                    response = connection.getresponse()
                    response.read()
                    statuses[response.status] += 1
            except (OSError, http.client.HTTPException):
                statuses[0] += 1
            finally:
                connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(int(clients))]
    for thread in threads:
        thread.start()
    sent.wait()
    print("started", flush=True)
    signal.sigwait({signal.SIGTERM})
    stop.set()
    print(json.dumps(dict(statuses)), flush=True)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    main()
