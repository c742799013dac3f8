import socket

import pytest

from thawllm.server.runner import BindError, bind_socket


def test_listener_is_tcp_for_nodelay():
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_port_in_use_names_address():
    first = bind_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(BindError, match=f"127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        first.close()
