"""The cluster URL, and which shard a tag, a worker or a job id belongs to.

Pure functions of a URL or a name and the number of shards, asking no server: the layout
that every producer and worker must agree on (see :mod:`qw_redis.cluster`), kept apart
from the routing that follows it (:mod:`qw_redis.cluster.base`).
"""

from __future__ import annotations

import functools
import zlib
from urllib.parse import parse_qsl, urlencode

import attrs
from redis.crc import key_slot

from qw_core.errors import ConfigurationError
from qw_redis import connection

SCHEMES = connection.CLUSTER_SCHEMES
EXAMPLE = "redis+cluster://host1:7000,host2:7001/?shards=3"
SLOTS = 16384
#: Most shards a URL may ask for.
MAX_SHARDS = 64


@attrs.frozen
class ClusterURL:
    """A parsed cluster URL: the seed nodes, the number of shards, and what each node's
    URL carries besides its address (scheme, login, redis-py settings)."""

    seeds: tuple[tuple[str, int], ...]
    shards: int
    scheme: str
    login: str  # "user:password@" or ""
    query: str  # redis-py settings and qw's own (max_job_size...), for every node

    def node_url(self, host: str, port: int) -> str:
        return f"{self.scheme}://{self.login}{host}:{port}/0" + (f"?{self.query}" if self.query else "")


def parse(url: str) -> ClusterURL:
    """Read ``redis+cluster://[user:password@]host:port[,host:port...][/0][?shards=N&...]``.

    :raises ConfigurationError: with what is wrong (the password hidden).
    """
    shown = connection.redact_url(url)
    bad = functools.partial(_bad_url, shown)
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SCHEMES:
        raise bad(f"the scheme must be redis+cluster:// or rediss+cluster:// ({EXAMPLE})")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    login, at, hosts = netloc.rpartition("@")
    if path not in ("", "0"):
        raise bad("a cluster has database 0 only: leave the path out, or write /0")
    seeds = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"each node is host:port, comma-separated ({EXAMPLE})")
        seeds.append((host, int(port)))
    shards = 1
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "shards":
            if not value.isdigit() or not 1 <= int(value) <= MAX_SHARDS:
                raise bad(f"shards must be a whole number from 1 to {MAX_SHARDS}")
            shards = int(value)
        else:
            kept.append((name, value))
    return ClusterURL(tuple(seeds), shards, SCHEMES[scheme.lower()], login + at, urlencode(kept))


def _bad_url(shown: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid Redis Cluster URL {shown}: {why}")


@functools.cache
def shard_tag(index: int, shards: int) -> str:
    """The hash tag of shard ``index`` of ``shards`` (see :mod:`qw_redis.cluster`)."""
    low, high = index * SLOTS // shards, (index + 1) * SLOTS // shards
    k = 0
    while not low <= key_slot(f"qw{shards}.{index}.{k}".encode()) < high:
        k += 1
    return f"{{qw{shards}.{index}.{k}}}"


def home_shard(worker: str, shards: int) -> int:
    """A worker's home shard: its pid (a worker is named ``<manager>.<pid>``) modulo
    ``shards``, so that a manager's workers spread evenly; crc32 of a name without one."""
    _, dot, pid = worker.rpartition(".")
    number = int(pid) if dot and pid.isdigit() else zlib.crc32(worker.encode("utf-8", "surrogateescape"))
    return number % shards


def id_shard(text: str, shards: int) -> int:
    """The shard of a job id or a unique key: crc32 of its UTF-8 bytes, modulo ``shards``."""
    return zlib.crc32(text.encode("utf-8", "surrogateescape")) % shards
