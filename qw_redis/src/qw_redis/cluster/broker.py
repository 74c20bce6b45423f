"""The cluster broker: :class:`ClusterBroker`, assembled from its roles, and its factory.

Each role is a module of this package, over the shards of :mod:`qw_redis.cluster.base`:
:mod:`~qw_redis.cluster.producing`, :mod:`~qw_redis.cluster.consuming`,
:mod:`~qw_redis.cluster.membership`, :mod:`~qw_redis.cluster.inspecting` and
:mod:`~qw_redis.cluster.listing`, :mod:`~qw_redis.cluster.administering` and
:mod:`~qw_redis.cluster.periodic`, as on a single node (:mod:`qw_redis.broker`). This
module assembles them, opens the broker from a URL, and makes the picklable factory that
opens it again in a worker process.
"""

from __future__ import annotations

import attrs

from qw_core.broker import BrokerFactory
from qw_core.errors import ConfigurationError
from qw_redis import connection
from qw_redis.cluster.administering import AdministratorPart
from qw_redis.cluster.consuming import ConsumerPart
from qw_redis.cluster.inspecting import InspectorPart
from qw_redis.cluster.listing import ListingPart
from qw_redis.cluster.membership import MembershipPart
from qw_redis.cluster.periodic import PeriodicPart
from qw_redis.cluster.producing import ProducerPart
from qw_redis.cluster.urls import EXAMPLE
from qw_redis.connection import RedisOptions


class ClusterBroker(
    ProducerPart,
    ConsumerPart,
    MembershipPart,
    InspectorPart,
    ListingPart,
    AdministratorPart,
    PeriodicPart,
):
    """A :class:`~qw_core.broker.Broker` on a Redis Cluster, its jobs spread over
    ``shards`` shards (see :mod:`qw_redis.cluster`). Open one with :meth:`from_url`."""

    @classmethod
    def from_url(cls, url: str | None = None, options: RedisOptions | None = None) -> ClusterBroker:
        """Open the Redis Cluster at ``redis+cluster://host:port[,host:port...]/?shards=N``
        (``rediss+cluster://`` for TLS; a login as in a Redis URL; other query parameters
        as in a Redis URL, for every node).

        :raises ConfigurationError: the URL is malformed.
        :raises BrokerUnavailable: no node answers.
        """
        if url is None:
            raise ConfigurationError(f"a Redis Cluster needs a URL, such as {EXAMPLE}")
        return cls(url, options)

    def factory(self) -> BrokerFactory:
        return ClusterBrokerFactory(url=self._url, options=self._options)


@attrs.frozen(kw_only=True)
class ClusterBrokerFactory:
    """Opens a :class:`ClusterBroker` like the one it was made from; picklable."""

    url: str
    options: RedisOptions = attrs.field(factory=RedisOptions)

    def __call__(self) -> ClusterBroker:
        return ClusterBroker(self.url, self.options)

    def __repr__(self) -> str:
        return f"ClusterBrokerFactory({connection.redact_url(self.url)!r})"
