"""Idle keep-alive connections outlive the clients' own keep-alive expiry.

httpx (and so both official Python clients) reuses an idle connection for up to 5 s. Were the
server to close idle connections at 5 s too (uvicorn's default), a request sent just as the
server closed would get the connection closed without a reply: the server keeps them longer
(`modelyard.cli.serve.KEEP_ALIVE_S`), so the client always lets go first.
"""

from __future__ import annotations

import http.client
import json
import time

from live import LiveServer

from modelyard.cli.serve import KEEP_ALIVE_S

CLIENT_EXPIRY_S = 5.0  # httpx.Limits().keepalive_expiry


def test_an_idle_connection_is_still_answered_after_the_clients_expiry(
    server: LiveServer,
) -> None:
    assert KEEP_ALIVE_S > CLIENT_EXPIRY_S
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=server.tls.context(), timeout=30
    )
    headers = {"Authorization": f"Bearer {server.token}"}

    def account() -> None:
        connection.request("GET", "/v1/account", headers=headers)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["username"] == "admin"
        assert not response.will_close

    try:
        account()
        opened = connection.sock
        time.sleep(CLIENT_EXPIRY_S + 1)
        # Closed by the server meanwhile, this would raise RemoteDisconnected (http.client
        # does not reconnect a connection it still holds).
        account()
        assert connection.sock is opened
    finally:
        connection.close()
