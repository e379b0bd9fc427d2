"""Several masters on one NATS JetStream cluster (``cluster_id`` and ``nats_servers`` set).

The engine does the distributed part; saline only names things and moves them:

* :mod:`.config`: the options (``cluster_id``, ``nats_servers``, credentials, TLS) and every name
  derived from the cluster id (streams, KV buckets, subjects), in one place.
* :mod:`.bridge`: one NATS connection per process, on an asyncio loop of its own in a thread, so
  that the master's synchronous parts (the outbox seam, the delivery workers) can call it.
* :mod:`saline.master.outbox.jetstream`: the outbox as a JetStream stream with a durable consumer
  per returner.
* :mod:`.keys`, :mod:`.jobs`, :mod:`.presence`: keys, jobs and "who is connected where", shared
  by every master through KV buckets and subjects.

Minions never speak NATS: they stay on ZeroMQ with CURVE, each connected to one master or several.
"""
