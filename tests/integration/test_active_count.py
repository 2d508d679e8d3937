"""The per-user cap on unfinished tasks (MAX_ACTIVE_PER_USER) counts on the real Redis: every
unfinished task of the user however long their history, in one command whatever its length."""
from __future__ import annotations

from pathlib import Path

import redis

from celery_dashboard.index import ACTIVE_KEY, owner_key
from tests.support import Stack
from web.store import TaskStore


def test_a_long_history_counts_every_unfinished_task_in_one_command(tmp_path: Path) -> None:
    # A redis-server of its own: its command counts are the whole server's, and the session's
    # Redis serves workers and web processes meanwhile (a BRPOP and a PUBLISH were counted once).
    own = Stack(logdir=tmp_path)
    own.start_redis()
    client = redis.Redis.from_url(own.redis_url)
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
        client.close()
        own.stop()
