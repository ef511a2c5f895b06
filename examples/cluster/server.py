"""A Python HTTP server that takes its listening socket from eco (fd 3)."""
import os
import signal
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from pid {os.getpid()} (instance {os.environ.get('ECO_INSTANCE')})\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def notify(message: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(message)


server = ThreadingHTTPServer(("127.0.0.1", 8081), Hello, bind_and_activate=False)
if os.environ.get("LISTEN_FDS"):
    server.socket.close()
    server.socket = socket.socket(fileno=3)
else:
    server.server_bind()
    server.server_activate()
server.daemon_threads = False
server.block_on_close = True  # server_close() waits for requests in flight
server.timeout = 0.2  # handle_request() returns at least this often

stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
notify(b"READY=1")
while not stopping:
    server.handle_request()
server.server_close()
