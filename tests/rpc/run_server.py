"""``run_server.py PORT``: the blocking ``Server.run`` entry point, for tests."""

import sys

import fastrpc


class Arith:
    def multiply(self, a, b):
        return a * b


if __name__ == "__main__":
    server = fastrpc.Server()
    server.register(Arith())
    print("starting", flush=True)
    server.run(f"tcp://127.0.0.1:{sys.argv[1]}", grace=2)
    print("stopped", flush=True)
