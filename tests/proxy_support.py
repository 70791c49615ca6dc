"""A TCP proxy between the application and a Tyrant server that can hold
back what clients send: a slow link, a TCP retransmission, a request that
arrives long after its sender gave up.  No tests here."""
import socket
import threading


class HoldingProxy(object):
    """Forwards 127.0.0.1:<port> to `target`.  While ``hold()`` is in force,
    bytes from clients are kept back (the answers of what already went
    through still flow); ``release()`` sends them on, in order."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = '127.0.0.1:%d' % self.port
        self._held = threading.Event()
        self._held.set()                      # set: nothing is held
        self._closing = False
        thread = threading.Thread(target=self._accept)
        thread.daemon = True
        thread.start()

    def hold(self):
        self._held.clear()

    def release(self):
        self._held.set()

    def _accept(self):
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except socket.error:
                return
            server = socket.create_connection(self.target, 5)
            for source, sink, held in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, held))
                thread.daemon = True
                thread.start()

    def _pump(self, source, sink, holdable):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if holdable:
                    self._held.wait()
                sink.sendall(data)
        except socket.error:
            pass
        finally:
            for each in (source, sink):
                try:
                    each.shutdown(socket.SHUT_RDWR)
                except socket.error:
                    pass

    def close(self):
        self._closing = True
        self.release()
        self.listener.close()
