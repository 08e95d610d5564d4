"""A scripted Map-Resolver on loopback for `lispctl lig` tests: a UDP
socket on 127.0.0.1 (any free port) read by a thread, each ECM'd
Map-Request handed to the subclass's on_request()."""
from __future__ import annotations

import socket
import threading

from lispctl.wire import EncapsulatedControlMessage, decode_control


class LoopbackResolver:
    def __init__(self) -> None:
        # Subclasses set their own state first: the thread starts here.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.on_request(decode_control(data))

    def on_request(self, ecm) -> None:
        raise NotImplementedError

    def to_itr(self, ecm: EncapsulatedControlMessage, payload: bytes) -> None:
        """Send to the request's first ITR-RLOC at its inner source port, as a Map-Resolver's ETR answers."""
        self.sock.sendto(payload, (str(ecm.message.itr_rlocs[0]), ecm.inner_sport))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()
