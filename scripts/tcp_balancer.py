#!/usr/bin/env python3
"""A TCP balancer for the local cluster (scripts/cluster.sh): round robin per connection,
no stickiness, plain bytes both ways (gRPC, gRPC-Web and HTTP pass through as TCP).

    python3 scripts/tcp_balancer.py --listen 127.0.0.1:7777 \
        --backend r1=127.0.0.1:7801 --backend r2=127.0.0.1:7802

Each accepted connection goes to the next backend in turn; a backend that refuses it (or
does not accept within --connect-timeout) is skipped for that connection, and the client is
closed only when every backend refused. A half-close is passed on; a reset closes both
sides. Logs on stderr: "listening on HOST:PORT" once bound, then one line per connection
naming the backend that took it ("conn 7 from 127.0.0.1:50312 -> r2 127.0.0.1:7802").
SIGTERM or SIGINT stops it.
"""

import argparse
import asyncio
import logging
import signal

log = logging.getLogger("tcp_balancer")


def host_port(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def backend(text):
    name, sep, addr = text.partition("=")
    if not sep:
        name, addr = text, text
    return (name,) + host_port(addr)


async def pump(reader, writer, other):
    """Copies reader to writer until EOF (then half-closes writer); on an error aborts
    both sides so the opposite pump ends too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
        other.transport.abort()


class Balancer:
    def __init__(self, backends, connect_timeout):
        self.backends = backends
        self.connect_timeout = connect_timeout
        self.turn = 0
        self.count = 0

    async def handle(self, client_reader, client_writer):
        self.count += 1
        conn = self.count
        peer = client_writer.get_extra_info("peername") or ("?", 0)
        first = self.turn
        self.turn = (self.turn + 1) % len(self.backends)
        for i in range(len(self.backends)):
            name, host, port = self.backends[(first + i) % len(self.backends)]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.connect_timeout
                )
            except (OSError, asyncio.TimeoutError) as e:
                log.warning("conn %d: %s %s:%d refused it (%s); next", conn, name, host, port, e)
                continue
            log.info("conn %d from %s:%d -> %s %s:%d", conn, peer[0], peer[1], name, host, port)
            try:
                await asyncio.gather(
                    pump(client_reader, writer, client_writer),
                    pump(reader, client_writer, writer),
                )
            finally:
                writer.close()
                client_writer.close()
            return
        log.error("conn %d from %s:%d: every backend refused it; closed", conn, peer[0], peer[1])
        client_writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=host_port, required=True, help="HOST:PORT")
    parser.add_argument(
        "--backend", type=backend, action="append", required=True, help="[NAME=]HOST:PORT"
    )
    parser.add_argument("--connect-timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)

    balancer = Balancer(args.backend, args.connect_timeout)
    server = await asyncio.start_server(balancer.handle, *args.listen, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    log.info("listening on %s:%d, backends %s", host, port,
             ", ".join(f"{n}={h}:{p}" for n, h, p in args.backend))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Not wait_closed(): it would wait for every open connection (Python 3.12+);
    # asyncio.run cancels their tasks on the way out instead.
    server.close()
    log.info("stopped")


if __name__ == "__main__":
    asyncio.run(main())
