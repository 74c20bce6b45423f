"""taskiq with taskiq-redis's ListQueueBroker (BRPOP): ``taskiq worker -w N``."""

from taskiq_redis import ListQueueBroker

from peers import common, taskiq_common

broker = ListQueueBroker(common.URL)
job, Producer, worker, version, concurrency = taskiq_common.adapter(broker, __name__)
