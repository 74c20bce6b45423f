"""Redis Cluster: qw's keyspace split into shards, each one complete keyspace under one hash tag.

What the peers do, and what qw does:

* BullMQ puts every key of a queue under one hash tag (``{queue}``), so each Lua script
  touches one slot; a queue lives on one node, and a busy one is split by hand into
  several queues ("groups" in the Pro version). qw does the same per shard.
* Sidekiq never spreads one queue over several servers either: "sharding" is a separate
  Redis per set of queues, chosen by the producer. qw's shards are chosen by qw.

Here a queue is spread over ``shards`` shards. Shard ``i`` is the original key schema with
a hash tag before every key (:class:`qw_redis.keys.KeySchema`), so the scripts run
unchanged, each on one slot, and the single-node schema stays byte for byte what it was.
A :class:`RedisBroker` per shard talks to the primary that owns its tag's slot (a plain
client per node: the scripts need nothing of redis-py's cluster client, and a shard moves
as one slot). :class:`ClusterBroker` routes:

* Producers: a job with a unique key goes to the shard of its key (so that the key is
  held in one place); a job sent to a worker to the worker's home shard; any other job to
  the shard of its id (``crc32(id) % shards``), which spreads jobs evenly and lets a lookup
  by id (``qw job``, results) go to the right shard first. Order is kept within a shard,
  not across shards.
* Workers: each has a home shard (its pid modulo ``shards``, so a manager's workers spread
  evenly). A take finishes and takes on the home shard first, in one round trip as on a
  single node; only when the home shard has nothing does it look at the others. A job
  taken from another shard is finished there (its shard is remembered per job).
* Waiting: a worker blocks on its home shard only (one connection can wait on one node),
  for at most :data:`CROSS_SHARD_POLL` seconds at a time, then looks at the other shards
  again. A job queued on a shard where some worker is waiting wakes that worker at once
  (its home); a job queued on a shard where no worker is homed waits at most that long.
  With at least as many workers as shards, every shard has waiting workers. (Pushing
  wake-up tokens to other shards from producers would cost every queueing call a round
  trip per shard, on the hot path, to save idle workers a fraction of a second.)
* Membership, heartbeats, schedule declarations: written to every shard (a few writes
  per heartbeat interval), so each shard is a complete keyspace whose reaper, run by any
  manager, recovers the lists its dead workers left on that shard.
* Listings and counts add up the shards; lookups by id ask the likely shard first.

``shards`` is part of the data layout: every producer and worker must use the same number
(the tags depend on it). Shard ``i`` of ``n`` is tagged ``{qw<n>.<i>.<k>}`` with the
smallest ``k`` whose slot lies in the ``i``-th of ``n`` equal ranges of the 16384 slots,
so that on a cluster whose primaries own equal ranges (``redis-cli --cluster create``)
the shards land on different primaries.

The package, a module per concern: :mod:`qw_redis.cluster.urls` (the URL, and which shard
a tag, a worker or an id belongs to), :mod:`qw_redis.cluster.base` (routing a call to a
shard, following a shard that moved), and the broker's roles as on a single node
(:mod:`~qw_redis.cluster.producing`, :mod:`~qw_redis.cluster.consuming`,
:mod:`~qw_redis.cluster.membership`, :mod:`~qw_redis.cluster.inspecting`,
:mod:`~qw_redis.cluster.listing`, :mod:`~qw_redis.cluster.administering`,
:mod:`~qw_redis.cluster.periodic`), assembled in :mod:`qw_redis.cluster.broker`.
"""

from __future__ import annotations

# The tunables are read in the module that defines them: a test that changes one patches
# that module (qw_redis.cluster.consuming, qw_redis.cluster.membership), not these copies.
from qw_redis.cluster.broker import ClusterBroker, ClusterBrokerFactory
from qw_redis.cluster.consuming import CROSS_SHARD_POLL, MAX_REMEMBERED
from qw_redis.cluster.membership import REAP_SPREAD
from qw_redis.cluster.urls import (
    EXAMPLE,
    MAX_SHARDS,
    SCHEMES,
    SLOTS,
    ClusterURL,
    home_shard,
    id_shard,
    parse,
    shard_tag,
)

__all__ = [
    "CROSS_SHARD_POLL",
    "EXAMPLE",
    "MAX_REMEMBERED",
    "MAX_SHARDS",
    "REAP_SPREAD",
    "SCHEMES",
    "SLOTS",
    "ClusterBroker",
    "ClusterBrokerFactory",
    "ClusterURL",
    "home_shard",
    "id_shard",
    "parse",
    "shard_tag",
]
