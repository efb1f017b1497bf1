"""A server process for kill/restart tests: ``server_proc.py PORT``.

Prints ``ready`` once it listens; serves until killed.
"""

import asyncio
import sys

import fastrpc


class Arith:
    def multiply(self, a, b):
        return a * b

    async def sleep_echo(self, seconds, value=None):
        await asyncio.sleep(seconds)
        return value


async def main(port: int) -> None:
    server = fastrpc.Server()
    server.register(Arith())
    await server.start(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except OSError as exc:  # port still taken: tell the parent
        print(f"error {exc}", flush=True)
        sys.exit(1)
