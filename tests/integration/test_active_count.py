"""The per-user cap on unfinished tasks (MAX_ACTIVE_PER_USER) counts on the real Redis: every
unfinished task of the user however long their history, in one command whatever its length."""
from __future__ import annotations

import redis

from celery_dashboard.index import ACTIVE_KEY, owner_key
from devstack.stack import db_url
from tests.support import Stack
from web.store import TaskStore

DB = 9  # a logical database of the session's Redis that no web or worker uses


def test_a_long_history_counts_every_unfinished_task_in_one_command(stack: Stack) -> None:
    client = redis.Redis.from_url(db_url(stack.redis_url, DB))
    client.flushdb()
    try:
        owner = owner_key("ada")
        # 3,000 tasks of history: the 5 oldest never ended (a worker died with them), the newest 3
        # are running; everything in between ended.
        client.zadd(owner, {f"t{i}": 1000.0 + i for i in range(3000)})
        client.sadd(ACTIVE_KEY, *(f"t{i}" for i in (0, 1, 2, 3, 4, 2997, 2998, 2999)))
        client.sadd(ACTIVE_KEY, *(f"other{i}" for i in range(50)))  # someone else's
        store = TaskStore(client, 200_000)

        before = client.info("commandstats")
        assert store.active_count("ada", 20) == 8  # the old ones too: the newest 1,000 held only 3
        after = client.info("commandstats")
        called = {name: after[name]["calls"] - before.get(name, {}).get("calls", 0)
                  for name in after if name != "cmdstat_info"
                  and after[name]["calls"] != before.get(name, {}).get("calls", 0)}
        assert called == {"cmdstat_zintercard": 1}, called  # not 3,000 ids read and sent back

        assert store.active_count("ada", 5) == 5  # counted only as far as the cap needs
        assert store.active_count("nobody", 20) == 0
    finally:
        client.flushdb()
