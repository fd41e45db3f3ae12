"""TCP plumbing for tests that stand between a client and a server (gateways, cuttable proxies)."""

from __future__ import annotations

import socket


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until either side closes or fails, then close both."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass
