"""taskiq with taskiq-redis's RedisStreamBroker (consumer group, XACK): ``taskiq worker -w N``."""

from taskiq_redis import RedisStreamBroker

from peers import common, taskiq_common

broker = RedisStreamBroker(common.URL)
job, Producer, worker, version, concurrency = taskiq_common.adapter(broker, __name__)
