"""A minimal WebSocket client for the fan-out bench: many sockets in one asyncio process, each
message stamped with the time its last bytes reached the process, parsed later.

A general client (``websockets``) runs a reader task per connection and hands each message to
the caller's task; stamping after ``recv()`` then measures the client's own queueing, and its
per-message work competes for the 2 CPUs with the server under test. Here the event loop calls
:meth:`LeanSocket.data_received` as soon as the socket is readable; it only splits frames
(server frames are unmasked), stamps them and answers pings. JSON is parsed after the run.

It acknowledges as the browser does (frontend/static/frontend/live_acks.js: after 100 messages,
128 kB, or 5 s after the first unacknowledged one, by a timer on the loop), so the
server's flow control (controlplane.metrics.consumers) costs the bench what it costs a page,
and a socket is never closed with 4008 for want of acks.
"""
from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
import time
from urllib.parse import urlsplit

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
#: A live message's seq and key, in front of its JSON (the history has none).
NUMBERED = re.compile(rb'^\{"seq": (\d+), "key": "([0-9a-f]+)"')
ACK_EVERY, ACK_BYTES, ACK_AFTER_S = 100, 128 * 1024, 5.0


class LeanSocket(asyncio.Protocol):
    """One client connection: ``messages`` holds ``(received, payload bytes)`` of every text
    message after the handshake; ``changed`` is set whenever one arrives or the socket closes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.messages: list[tuple[float, bytes]] = []
        self.fragments: list[bytes] = []
        self.changed = asyncio.Event()
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None
        #: Flow control: the last numbered message not acknowledged yet (seq, key), how many
        #: and how many bytes since the last ack, the timer that acknowledges a quiet tail.
        self.unacked: tuple[bytes, bytes] | None = None
        self.unacked_count = self.unacked_bytes = 0
        self.ack_timer: asyncio.TimerHandle | None = None
        self.acks = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self.buffer += data
        if not self.handshaken.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:end]).split(b"\r\n", 1)[0]
            del self.buffer[:end + 4]
            if b" 101 " not in status:
                self.handshaken.set_exception(ConnectionError(status.decode("latin1")))
                return
            self.handshaken.set_result(None)
        self._frames(received)

    def _frames(self, received: float) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, length = buffer[0], buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start:start + length])
            del buffer[:start + length]
            opcode, final = first & 0x0F, first & 0x80
            if opcode == PING:
                self._send(PONG, payload)
            elif opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                self.transport.close()
                self.changed.set()
            elif opcode in (TEXT, 0x0):  # a text message or its continuation
                self.fragments.append(payload)
                if final:
                    message = b"".join(self.fragments)
                    self.messages.append((received, message))
                    self.fragments = []
                    self._note(message)
                    self.changed.set()

    def _note(self, message: bytes) -> None:
        """Acknowledge, as the browser would, once enough is unacknowledged."""
        numbered = NUMBERED.match(message)
        if numbered is None:
            return
        self.unacked = numbered.groups()
        self.unacked_count += 1
        self.unacked_bytes += len(message)
        if self.unacked_count >= ACK_EVERY or self.unacked_bytes >= ACK_BYTES:
            self._ack()
        elif self.ack_timer is None:
            self.ack_timer = asyncio.get_running_loop().call_later(ACK_AFTER_S, self._ack)

    def _ack(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.unacked is None or self.transport is None or self.transport.is_closing():
            return
        seq, key = self.unacked
        self._send(TEXT, b'{"type": "ack", "seq": %s, "key": "%s"}' % (seq, key))
        self.unacked, self.unacked_count, self.unacked_bytes = None, 0, 0
        self.acks += 1

    def connection_lost(self, exc) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during the handshake"))
        if self.close_code is None:
            self.close_code = 1006
        self.changed.set()

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client frame (masked, as RFC 6455 requires)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(CLOSE, struct.pack("!H", 1000))
            self.transport.close()


async def open_socket(url: str, headers: dict[str, str], timeout_s: float = 30) -> LeanSocket:
    """Open ``url`` (ws://host:port/path) with extra request ``headers``."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, socket = await asyncio.wait_for(
        loop.create_connection(LeanSocket, parts.hostname, parts.port), timeout_s)
    key = base64.b64encode(os.urandom(16)).decode()
    request = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}",
               "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
               "Sec-WebSocket-Version: 13", *(f"{name}: {value}" for name, value in
                                               headers.items())]
    socket.transport.write(("\r\n".join(request) + "\r\n\r\n").encode("latin1"))
    await asyncio.wait_for(socket.handshaken, timeout_s)
    return socket
