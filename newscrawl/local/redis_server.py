"""The project's local Redis, for distributed crawls on one machine and for the tests.

`redis-server` from Debian (scripts/bootstrap installs it) on a free port of
127.0.0.1, its data under .local/redis/ and nothing saved to disk
(`--save ''`, no AOF): the frontier of a distributed crawl lives as long as
the server does. `start()` waits for PING and returns the URL; with
NEWSCRAWL_REDIS_URL set, nothing is started and that server is used, as
localdb does with MONGO_URI.

    python -m newscrawl.local.redis_server start|status|stop    # start prints the URL
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from newscrawl.local.server import (
    LocalServer,
    free_port,
    launch_server,
    process_start,
)
from newscrawl.redaction import redact

URL_ENV = "NEWSCRAWL_REDIS_URL"


class LocalRedisError(RuntimeError):
    """The local Redis could not be found, started or reached."""


@dataclass
class RedisState:
    pid: int
    url: str
    data_dir: str
    log_file: str
    started: str = ""  # process start time: a reused pid is not ours (localserver)
    program: str = "redis-server"


def server_binary() -> str:
    """redis-server from PATH (Debian puts it in /usr/bin)."""
    found = shutil.which("redis-server") or next(
        (path for path in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(path, os.X_OK)),
        None)
    if found is None:
        raise LocalRedisError("redis-server is not installed: run scripts/bootstrap "
                              "(or apt-get install redis-server)")
    return found


def ping(url: str, timeout: float = 2.0) -> bool:
    import redis  # imported here: `status` should not pay for it otherwise

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def read_state() -> RedisState | None:
    return SERVER.read_state()


def running_url() -> str | None:
    """NEWSCRAWL_REDIS_URL when set, else the URL of the local server if it runs."""
    return SERVER.running_address()


def launch(port: int, data_dir: Path, log_file: Path, *, timeout: float = 30.0,
           password: str | None = None, tls_cert: Path | None = None,
           tls_key: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on 127.0.0.1:port, working in data_dir; wait for PING.

    With `password`, clients must give it (it goes in a config file only we can
    read, not on the command line `ps` shows); with `tls_cert` and `tls_key`,
    the port speaks TLS only and the URL is `rediss://` trusting that certificate.
    """
    binary = server_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = ["bind 127.0.0.1", f"dir {data_dir}", "save \"\"", "appendonly no", "daemonize no",
              "logfile \"\""]
    scheme, auth, query = "redis", "", ""
    if tls_cert is not None and tls_key is not None:
        config += ["port 0", f"tls-port {port}", f"tls-cert-file {tls_cert}",
                   f"tls-key-file {tls_key}", f"tls-ca-cert-file {tls_cert}", "tls-auth-clients no"]
        scheme, query = "rediss", f"?ssl_ca_certs={tls_cert}"
    else:
        config.append(f"port {port}")
    if password is not None:
        config.append(f"requirepass \"{password}\"")
        auth = f":{password}@"
    config_file = data_dir / f"redis-{port}.conf"
    config_file.touch(mode=0o600)
    config_file.write_text("\n".join(config) + "\n", encoding="utf-8")
    command = [binary, str(config_file)]
    url = f"{scheme}://{auth}127.0.0.1:{port}/0{query}"
    proc = launch_server(command, log_file, url, lambda address: ping(address, timeout=1.0),
                         timeout=timeout, poll=0.05, error=LocalRedisError,
                         what=f"redis-server (port {port})")
    return proc, url


def start(*, timeout: float = 30.0) -> str:
    """Start the local server unless it (or NEWSCRAWL_REDIS_URL) is already there; return its URL."""
    def launch_here(base: Path) -> RedisState:
        data_dir, log_file = base / "data", base / "redis.log"
        proc, url = launch(free_port(), data_dir, log_file, timeout=timeout)
        return RedisState(proc.pid, url, str(data_dir), str(log_file), process_start(proc.pid) or "",
                          "redis-server")

    return SERVER.start(launch_here)


def stop() -> bool:
    """Stop the local server; False when it was not running."""
    return SERVER.stop()


SERVER = LocalServer("redis", URL_ENV, RedisState, lambda state: state.url, ping)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m newscrawl.local.redis_server",
                                     description="The local Redis of distributed crawls.")
    parser.add_argument("action", choices=("start", "status", "stop"))
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            print(redact(start()))
        elif args.action == "stop":
            if not stop():
                print("local redis: not running", file=sys.stderr)
        else:
            url = running_url()
            if url is None or not ping(url):
                print("local redis: not running", file=sys.stderr)
                return 1
            print(redact(url))
    except LocalRedisError as exc:
        print(f"newscrawl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
