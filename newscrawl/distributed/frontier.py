"""Distributed crawling: several crawler processes share one run's frontier in Redis.

Built on scrapy-redis (its Redis connection settings, request serialisation,
priority queue, fingerprint set and scheduler), switched on by the add-on
`RedisFrontier` when NEWSCRAWL_REDIS_URL is set (README "Distributed
crawling"). Processes that share NEWSCRAWL_RUN_ID share one run: its request
queue, its dupefilter, and the spiders' "asked once" sets. What scrapy-redis
lacks for that, added here:

- Per-run keys, expiring: a run's dupefilter is not the next run's (the
  scrapy-redis trap: a persistent dupefilter blocks every later run), and
  every key of a run expires NEWSCRAWL_REDIS_RUN_TTL after its last process
  stopped.
- One process seeds a run: the first to claim it schedules the spider's
  start requests; the others take their work from the shared queue.
- A run ends when it is done everywhere: scrapy-redis closes a process as soon
  as the queue is empty for a moment (so a process started second, or one
  whose peer holds the last request, closes at once). Here a process asks for
  more until the queue is empty and no live process holds a request. An idle
  engine asks its scheduler only every 5 seconds: the frontier's tick (every
  second) hands it a request that came meanwhile (`engine.crawl`), or closes
  the spider once the run is over, with Scrapy's public engine API alone.
- Nothing is lost with a process: a request taken from the queue is kept in
  that process's `processing` hash, atomically, until it is finished and its
  items are in the database or the spool (MongoPipeline says so with the
  `items_durable` signal after each write, however long its retries take;
  without it, NEWSCRAWL_REDIS_SETTLE seconds); a process that stops refreshing its
  `alive` key (killed, machine lost) has its requests put back in the queue
  by the next process that looks.
- Requests travel as JSON (`RequestJSON`: Scrapy's request_to_dict, callbacks
  by name, bytes, dates and the project's items tagged), never pickle: whoever
  can write to the Redis could otherwise run code in every crawler. Anything
  else found in the queue is refused, logged and dropped.
- Details: request fingerprints are the crawler's (REQUEST_FINGERPRINTER,
  not scrapy-redis's own hash); stats are counted without the `spider`
  argument Scrapy 2.19 deprecates (scrapy-redis 0.9.1 warns on every
  request); a process that finishes never clears the shared queue or
  fingerprints; no pop blocks the reactor.

Keys of a run, `<prefix>:{<spider>:<run id>}:<name>`:

    requests             sorted set, the queue (score -priority), as scrapy-redis
    dupefilter           set of request fingerprints
    seed, seeded         the process that schedules the start requests; set once it has
    workers              hash: process id -> JSON (host, pid, started)
    alive:<process>      expires NEWSCRAWL_REDIS_WORKER_TIMEOUT seconds after the last heartbeat
    processing:<process> hash: requests taken and not finished ("<seq>:<score>" -> request)
    settling:<process>   hash: finished requests whose items may still wait in the pipeline's batch
    claims:<attribute>   run-wide value of a spider's "asked once" set (NEWSCRAWL_REDIS_SHARED_SETS)
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import secrets
import socket
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, MutableSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import redis
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, DontCloseSpider
from scrapy.settings import BaseSettings
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.log import failure_to_exc_info
from scrapy.utils.request import request_from_dict
from scrapy_redis import connection
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.queue import PriorityQueue
from scrapy_redis.scheduler import Scheduler
from twisted.internet import task
from twisted.python.failure import Failure

from newscrawl.components.middlewares import BackoffRetryMiddleware
from newscrawl.items import ArticleItem, ListingSighting
from pipelines import signals as storage_signals

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "newscrawl"
DEFAULT_RUN_TTL = 24 * 3600  # seconds a run's keys outlive its last process
DEFAULT_WORKER_TIMEOUT = 30.0  # seconds without a heartbeat before a process counts as gone
# The spiders' per-run "asked once" sets that become run-wide: without them, a
# post listed twice whose two pages land in two processes would have its share
# request dropped as a duplicate in the second, and that sighting lost.
DEFAULT_SHARED_SETS = ("share_codes_requested", "listings_requested")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
CLAIM_META = "newscrawl_frontier_claim"  # "<seq>:<score>" of a request taken from the queue
HANDED_META = "newscrawl_frontier_handed"  # taken from the queue by the frontier, given to the engine

# ZPOPMIN the queue's first request into this process's processing hash, in one step.
TAKE = """
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then return false end
local field = ARGV[1] .. ':' .. popped[2]
redis.call('HSET', KEYS[2], field, popped[1])
return {field, popped[1]}
"""
# Move finished requests from processing to settling.
SETTLE = """
for _, field in ipairs(ARGV) do
  local data = redis.call('HGET', KEYS[1], field)
  if data then
    redis.call('HSET', KEYS[2], field, data)
    redis.call('HDEL', KEYS[1], field)
  end
end
return #ARGV
"""
# Put a process's processing and settling requests back in the queue and forget it;
# -1 (and nothing done) when ARGV[2] is '1' and its alive key is still there.
REQUEUE = """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
local count = 0
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  local entries = redis.call('HGETALL', key)
  for i = 1, #entries, 2 do
    local score = string.match(entries[i], ':(.*)$')
    redis.call('ZADD', KEYS[1], score, entries[i + 1])
    count = count + 1
  end
  redis.call('DEL', key)
end
redis.call('HDEL', KEYS[4], ARGV[1])
return count
"""
# Claim the seeding of a run: when nobody has, or its claimant is gone before it finished.
CLAIM_SEED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
# Give the claim back (a seeding that stopped half-way), if it is still ours.
RELEASE_SEED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def check_name(value: str, setting: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{setting}={value!r}: use 1-100 letters, digits, '.', '_', ':' or '-'")
    return value


def fresh_run_id() -> str:
    """A run id of one process alone: its start time and a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_key_template(prefix: str, run_id: str) -> str:
    """The base of a run's keys; `%(spider)s` as scrapy-redis spells key templates."""
    return f"{prefix}:{{%(spider)s:{run_id}}}"


class RedisFrontier:
    """Scrapy add-on: with NEWSCRAWL_REDIS_URL set, the crawl's frontier is its run's in Redis.

    `ADDONS = {"newscrawl.distributed.frontier.RedisFrontier": 0}`; it does nothing while
    NEWSCRAWL_REDIS_URL is empty. It replaces SCHEDULER and DUPEFILTER_CLASS
    (newscrawl.components.dupefilters.RunDupeFilter in memory) at project priority, so a
    `-s` on the command line still wins.
    """

    def update_settings(self, settings: BaseSettings) -> None:
        url = settings.get("NEWSCRAWL_REDIS_URL")
        if not url:
            return
        prefix = check_name(settings.get("NEWSCRAWL_REDIS_PREFIX") or DEFAULT_PREFIX,
                            "NEWSCRAWL_REDIS_PREFIX")
        run_id = settings.get("NEWSCRAWL_RUN_ID")
        if run_id:
            check_name(run_id, "NEWSCRAWL_RUN_ID")
        else:
            run_id = fresh_run_id()
            logger.warning("NEWSCRAWL_RUN_ID is not set: this process is a run of its own (%s); "
                           "processes meant to share a crawl need one NEWSCRAWL_RUN_ID", run_id)
        if settings.get("JOBDIR"):
            logger.warning("JOBDIR is not used for the request queue of a distributed crawl: "
                           "the run's state is in Redis")
        base = run_key_template(prefix, run_id)
        values: dict[str, Any] = {
            "NEWSCRAWL_RUN_ID": run_id,
            "NEWSCRAWL_REDIS_RUN_KEY": base,
            "REDIS_URL": url,
            "SCHEDULER": "newscrawl.distributed.frontier.FrontierScheduler",
            "DUPEFILTER_CLASS": "newscrawl.distributed.frontier.RunRedisDupeFilter",
            "SCHEDULER_QUEUE_CLASS": "newscrawl.distributed.frontier.FrontierQueue",
            "SCHEDULER_QUEUE_KEY": f"{base}:requests",
            "SCHEDULER_DUPEFILTER_KEY": f"{base}:dupefilter",
            # A process that ends must not clear what the others still use.
            "SCHEDULER_PERSIST": True,
            "SCHEDULER_FLUSH_ON_START": False,
            # A blocking pop would stall the reactor; idle processes poll instead.
            "SCHEDULER_IDLE_BEFORE_CLOSE": 0,
        }
        for name, value in values.items():
            settings.set(name, value, priority="project")
        # Spider side of every other middleware: it decides what becomes of start() itself.
        settings.set_in_component_priority_dict("SPIDER_MIDDLEWARES", FrontierSpiderMiddleware, 1050)


@dataclass(frozen=True)
class RunKeys:
    base: str

    @property
    def requests(self) -> str:
        return f"{self.base}:requests"

    @property
    def dupefilter(self) -> str:
        return f"{self.base}:dupefilter"

    @property
    def seed(self) -> str:
        return f"{self.base}:seed"

    @property
    def seeded(self) -> str:
        return f"{self.base}:seeded"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    def alive(self, worker: str = "") -> str:
        return f"{self.base}:alive:{worker}"

    def processing(self, worker: str) -> str:
        return f"{self.base}:processing:{worker}"

    def settling(self, worker: str) -> str:
        return f"{self.base}:settling:{worker}"

    def claims(self, name: str) -> str:
        return f"{self.base}:claims:{name}"


def held_claims(engine: Any) -> set[str] | None:
    """Claims of the requests the engine still holds (downloading, or being scraped).

    Reads the attributes the telnet console's `est()` reports. None when they
    cannot be read (another Scrapy): nothing is then settled before the end.
    """
    try:
        held: list[Any] = list(engine.downloader.active)
        slot = engine.scraper.slot
        if slot is not None:
            held += list(slot.active)
            held += [entry[1] for entry in slot.queue]
    except (AttributeError, TypeError, IndexError, KeyError):
        return None
    return {r.meta[CLAIM_META] for r in held if isinstance(r, Request) and CLAIM_META in r.meta}


class RunClaimSet(MutableSet[str]):
    """A spider's "asked once in this run" set, shared by the run's processes.

    A membership test that answers False also claims the value (one SADD):
    the spiders' `if value not in asked: asked.add(value)` becomes one atomic
    step across processes, so exactly one of them asks.
    """

    def __init__(self, server: redis.Redis, key: str, initial: Iterable[str] = ()) -> None:
        self.server = server
        self.key = key
        values = list(initial)
        if values:
            self.server.sadd(self.key, *values)

    def __contains__(self, value: object) -> bool:
        return not self.server.sadd(self.key, str(value))

    def add(self, value: str) -> None:
        self.server.sadd(self.key, value)

    def discard(self, value: str) -> None:
        self.server.srem(self.key, value)

    def __len__(self) -> int:
        return int(self.server.scard(self.key))

    def __iter__(self) -> Iterator[str]:
        for member in self.server.smembers(self.key):
            yield member.decode() if isinstance(member, bytes) else str(member)


class Frontier:
    """One process's side of a run in Redis: its id, heartbeat, claims and cleanup."""

    _of: weakref.WeakKeyDictionary[Crawler, Frontier] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, crawler: Crawler) -> Frontier:
        """The crawler's frontier: the scheduler, dupefilter and middleware share it."""
        frontier = cls._of.get(crawler)
        if frontier is None:
            frontier = cls._of[crawler] = cls(crawler)
        return frontier

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        template = settings.get("NEWSCRAWL_REDIS_RUN_KEY")
        if not template:
            raise RuntimeError("the Redis frontier needs NEWSCRAWL_REDIS_URL "
                               "(and the newscrawl.distributed.frontier.RedisFrontier add-on)")
        self.crawler = crawler
        self.run_id: str = settings.get("NEWSCRAWL_RUN_ID")
        self.spider_name = str(crawler.spidercls.name)
        self.keys = RunKeys(template % {"spider": self.spider_name})
        self.server: redis.Redis = connection.get_redis_from_settings(settings)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.run_ttl = settings.getint("NEWSCRAWL_REDIS_RUN_TTL", DEFAULT_RUN_TTL)
        self.worker_timeout = settings.getfloat("NEWSCRAWL_REDIS_WORKER_TIMEOUT", DEFAULT_WORKER_TIMEOUT)
        self.tick_interval = min(1.0, self.worker_timeout / 5)
        # A finished request stays recoverable until the write that took its items is done
        # (items_durable from MongoPipeline); a fixed window only without that pipeline.
        self.settle_time = settings.getfloat(
            "NEWSCRAWL_REDIS_SETTLE", 2 * settings.getfloat("MONGO_FLUSH_INTERVAL", 2.0) + 5)
        self.storage_reports = False  # MongoPipeline sends items_durable
        self.durable_until = float("-inf")  # items received by then are stored or spooled
        crawler.signals.connect(self.storage_opened, signal=storage_signals.storage_opened)
        crawler.signals.connect(self.items_durable, signal=storage_signals.items_durable)
        self.shared_sets = settings.getlist("NEWSCRAWL_REDIS_SHARED_SETS", list(DEFAULT_SHARED_SETS))
        self._take = self.server.register_script(TAKE)
        self._settle = self.server.register_script(SETTLE)
        self._requeue = self.server.register_script(REQUEUE)
        self._claim_seed = self.server.register_script(CLAIM_SEED)
        self._release_seed = self.server.register_script(RELEASE_SEED)
        self.seq = 0
        self.settled: dict[str, float] = {}  # settling field -> when it finished
        self.loop: task.LoopingCall | None = None
        self.seed_lost_logged = False
        self.tick_failing = False
        self.scheduler: FrontierScheduler | None = None  # the crawl's, once it is made
        self.start_failed = False  # the spider's start() raised (FrontierSpiderMiddleware saw it)

    def storage_opened(self) -> None:
        self.storage_reports = True

    def items_durable(self, taken_at: float) -> None:
        self.durable_until = max(self.durable_until, taken_at)

    # --- joining and leaving ------------------------------------------------
    def join(self) -> None:
        """Register this process, recover what gone processes held, start the heartbeat."""
        self.server.ping()
        self.heartbeat()
        stats = self.crawler.stats
        if stats is not None:
            stats.set_value("newscrawl/frontier/run_id", self.run_id)
            stats.set_value("newscrawl/frontier/worker", self.worker)
        self.recover()
        logger.info("distributed run %s (%s): process %s, %d requests queued", self.run_id,
                    self.keys.base, self.worker, self.server.zcard(self.keys.requests))
        self.loop = task.LoopingCall(self.tick)
        self.loop.start(self.tick_interval, now=False)

    def leave(self, reason: str) -> None:
        """At the end of this process: hand back anything unfinished, then unregister.

        Scrapy closes the scheduler after the downloads in progress and the item
        pipelines (whose last batch is written then), so settling requests are safe.
        """
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.settle(engine_idle=True)
        self.server.delete(self.keys.settling(self.worker))
        self.settled.clear()
        back = self._requeue(keys=self.requeue_keys(self.worker), args=[self.worker, "0"])
        if back:
            logger.warning("%d unfinished requests put back in the queue of run %s", back, self.run_id)
        pipe = self.server.pipeline()
        pipe.delete(self.keys.alive(self.worker))
        self.expire_shared(pipe)
        pipe.execute()
        logger.info("left distributed run %s (%s): %d requests still queued", self.run_id, reason,
                    self.server.zcard(self.keys.requests))

    def shared_keys(self) -> list[str]:
        keys = [self.keys.requests, self.keys.dupefilter, self.keys.seed, self.keys.seeded,
                self.keys.workers]
        return keys + [self.keys.claims(name) for name in self.shared_sets]

    def expire_shared(self, pipe: Any) -> None:
        for key in self.shared_keys():
            pipe.expire(key, self.run_ttl)

    def heartbeat(self) -> None:
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started})
        pipe = self.server.pipeline()
        pipe.set(self.keys.alive(self.worker), "1", px=int(self.worker_timeout * 1000))
        pipe.hset(self.keys.workers, self.worker, info)
        self.expire_shared(pipe)
        pipe.expire(self.keys.processing(self.worker), self.run_ttl)
        pipe.expire(self.keys.settling(self.worker), self.run_ttl)
        pipe.execute()

    def tick(self) -> None:
        """Every tick_interval: heartbeat, settle, and what an idle engine's ask would do
        (FrontierScheduler.kick). Never raises (that would stop the loop)."""
        try:
            self.heartbeat()
            self.settle()
            if self.scheduler is not None:
                self.scheduler.kick()
        except redis.RedisError as exc:
            if not self.tick_failing:
                logger.warning("Redis heartbeat failed (%s); retrying", exc)
            self.tick_failing = True
            return
        except Exception:
            if not self.tick_failing:
                logger.error("frontier heartbeat failed", exc_info=True)
            self.tick_failing = True
            return
        self.tick_failing = False

    # --- requests ---------------------------------------------------------------
    def take(self) -> tuple[str, bytes] | None:
        """The queue's first request, now held in this process's processing hash."""
        self.seq += 1
        taken = self._take(keys=[self.keys.requests, self.keys.processing(self.worker)],
                           args=[str(self.seq)])
        if not taken:
            return None
        field, data = taken
        return (field.decode() if isinstance(field, bytes) else str(field)), data

    def settle(self, *, engine_idle: bool = False) -> None:
        """Move finished requests to settling; forget those settled long enough.

        `engine_idle`: the engine holds no request (Scrapy asks the scheduler
        whether work is pending only then), so everything taken is finished but
        the retries still waiting their time.
        """
        held = set() if engine_idle else held_claims(self.crawler.engine)
        if held is None:
            return
        # A retry waiting on its timer (BackoffRetryMiddleware) is unfinished, engine idle or
        # not: its original's claim stays in processing, so a process that stops gives it back.
        held |= {request.meta[CLAIM_META] for request in BackoffRetryMiddleware.held_requests(self.crawler)
                 if CLAIM_META in request.meta}
        processing = self.keys.processing(self.worker)
        fields = [f.decode() if isinstance(f, bytes) else str(f) for f in self.server.hkeys(processing)]
        finished = [field for field in fields if field not in held]
        now = time.monotonic()
        if finished:
            self._settle(keys=[processing, self.keys.settling(self.worker)], args=finished)
            for field in finished:
                self.settled.setdefault(field, now)
        if self.storage_reports:
            # Finished by `when`: its items were in the buffer a write took after that.
            expired = [field for field, when in self.settled.items() if when <= self.durable_until]
        else:
            expired = [field for field, when in self.settled.items() if now - when >= self.settle_time]
        if expired:
            self.server.hdel(self.keys.settling(self.worker), *expired)
            for field in expired:
                del self.settled[field]

    def refuse(self, field: str, data: bytes, exc: Exception) -> None:
        """Drop a queue entry that is not a request of ours, loudly."""
        self.server.hdel(self.keys.processing(self.worker), field)
        logger.error("refused an entry of the queue of run %s (%s: %s): %d bytes starting %r; "
                     "someone else writes to this Redis: give it a password (README)", self.run_id,
                     type(exc).__name__, exc, len(data), bytes(data[:40]))
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value("newscrawl/frontier/refused")

    def requeue_keys(self, worker: str) -> list[str]:
        return [self.keys.requests, self.keys.processing(worker), self.keys.settling(worker),
                self.keys.workers, self.keys.alive(worker)]

    def recover(self) -> int:
        """Put back in the queue what processes gone without a word held; how many requests."""
        total = 0
        for raw in self.server.hkeys(self.keys.workers):
            worker = raw.decode() if isinstance(raw, bytes) else str(raw)
            if worker == self.worker:
                continue
            count = int(self._requeue(keys=self.requeue_keys(worker), args=[worker, "1"]))
            if count > 0:
                logger.warning("process %s of run %s is gone: its %d unfinished requests are back "
                               "in the queue", worker, self.run_id, count)
                total += count
        if total and self.crawler.stats is not None:
            self.crawler.stats.inc_value("newscrawl/frontier/requeued", total)
        return total

    def run_finished(self) -> bool:
        """Nothing queued, nothing held or settling in a live process, seeding done: the run
        is over."""
        self.settle(engine_idle=True)
        if self.server.zcard(self.keys.requests) or self.recover():
            return False
        if not self.server.exists(self.keys.seeded):
            owner = self.server.get(self.keys.seed)
            owner_name = owner.decode() if isinstance(owner, bytes) else owner
            if owner_name and owner_name != self.worker and self.server.exists(self.keys.alive(owner_name)):
                return False  # its start requests are still coming
            if not self.seed_lost_logged:
                self.seed_lost_logged = True
                logger.error("the start requests of run %s were not all scheduled (the process "
                             "seeding it stopped): start a process with the same NEWSCRAWL_RUN_ID "
                             "to seed it again, or a new run", self.run_id)
        for raw in self.server.hkeys(self.keys.workers):
            worker = raw.decode() if isinstance(raw, bytes) else str(raw)
            if self.server.hlen(self.keys.processing(worker)):
                return False
            # Its items may still be in a write that retries: if that process dies now,
            # these requests come back to the queue, and someone must be there to take them.
            if worker != self.worker and self.server.hlen(self.keys.settling(worker)):
                return False
        return not self.server.zcard(self.keys.requests)

    # --- seeding and claims -----------------------------------------------------
    def claim_seed(self) -> bool:
        return bool(self._claim_seed(keys=[self.keys.seed, self.keys.seeded],
                                     args=[self.worker, self.keys.alive(), self.run_ttl]))

    def mark_seeded(self) -> None:
        self.server.set(self.keys.seeded, self.worker, ex=self.run_ttl)

    def release_seed(self) -> None:
        self._release_seed(keys=[self.keys.seed], args=[self.worker])

    def claim_set(self, name: str, initial: Iterable[str]) -> RunClaimSet:
        return RunClaimSet(self.server, self.keys.claims(name), initial)


class RefusedRequest(ValueError):
    """Data in the run's queue that is not a request this project wrote."""


class RequestJSON:
    """scrapy-redis serializer: a request dict as JSON, and only that.

    Values JSON lacks are tagged one-key objects: `{"$bytes": base64}`,
    `{"$datetime": iso}`, `{"$pairs": [[key, value], …]}` (dicts whose keys
    are not all plain strings: headers) and `{"$item": class, "fields": {…}}`
    for the project's own items. Loading refuses anything else: no pickle, no
    other classes, no request class of its own (`_class`), callbacks only by
    the name of a public method of the spider (checked when decoding).
    """

    VERSION = 1
    ITEMS: dict[str, type] = {"ArticleItem": ArticleItem, "ListingSighting": ListingSighting}

    @classmethod
    def dumps(cls, request: dict[str, Any]) -> bytes:
        if "_class" in request:
            raise TypeError(f"only plain scrapy.Request objects go through Redis, not {request['_class']}")
        return json.dumps({"newscrawl_request": cls.VERSION, "request": cls._encode(request)},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def loads(cls, data: bytes | str) -> dict[str, Any]:
        try:
            envelope = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise RefusedRequest(f"not JSON ({type(exc).__name__})") from None
        if not isinstance(envelope, dict) or envelope.get("newscrawl_request") != cls.VERSION:
            raise RefusedRequest("not a request written by newscrawl")
        request = cls._decode(envelope.get("request"))
        if not isinstance(request, dict) or not isinstance(request.get("url"), str):
            raise RefusedRequest("no request in it")
        if "_class" in request:
            raise RefusedRequest(f"a request class of its own: {request['_class']!r}")
        return request

    @classmethod
    def _encode(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, bytes):
            return {"$bytes": base64.b64encode(value).decode("ascii")}
        if isinstance(value, datetime):
            return {"$datetime": value.isoformat()}
        if isinstance(value, list | tuple):
            return [cls._encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: cls._encode(v) for k, v in value.items()}
            return {"$pairs": [[cls._encode(k), cls._encode(v)] for k, v in value.items()]}
        name = type(value).__name__
        if cls.ITEMS.get(name) is type(value) and dataclasses.is_dataclass(value):
            fields = {f.name: cls._encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"$item": name, "fields": fields}
        raise TypeError(f"a request holds a {type(value).__qualname__}, which cannot go through "
                        "Redis as JSON")

    @classmethod
    def _decode(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [cls._decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        tags = [k for k in value if k.startswith("$")]
        if not tags:
            return {k: cls._decode(v) for k, v in value.items()}
        try:
            if tags == ["$bytes"] and len(value) == 1:
                return base64.b64decode(value["$bytes"], validate=True)
            if tags == ["$datetime"] and len(value) == 1:
                return datetime.fromisoformat(value["$datetime"])
            if tags == ["$pairs"] and len(value) == 1:
                return {cls._decode(k): cls._decode(v) for k, v in value["$pairs"]}
            if tags == ["$item"] and set(value) == {"$item", "fields"} and value["$item"] in cls.ITEMS:
                return cls.ITEMS[value["$item"]](**cls._decode(value["fields"]))
        except (ValueError, TypeError) as exc:
            raise RefusedRequest(f"a bad {tags[0]} value ({exc})") from None
        raise RefusedRequest(f"an unknown value {tags[0]!r}")


def check_callbacks(request: dict[str, Any], spider: Spider) -> None:
    """A decoded request's callback and errback: names of the spider's own public methods
    (`parse`, or one scrapy.Spider does not have: not `close`, not `start`)."""
    for name in ("callback", "errback"):
        method = request.get(name)
        if method is None:
            continue
        if (not isinstance(method, str) or method.startswith("_")
                or (method != "parse" and hasattr(Spider, method))
                or not callable(getattr(spider, method, None))):
            raise RefusedRequest(f"{name} {method!r} is not a method of spider {spider.name}")


class FrontierQueue(PriorityQueue):
    """scrapy-redis's priority queue; a pop also records the request as held by this process.

    Requests are JSON (RequestJSON); an entry that is not one is refused: logged,
    counted (`newscrawl/frontier/refused`) and dropped from the queue.
    """

    def __init__(self, server: Any, spider: Spider, key: str, serializer: Any = None) -> None:
        super().__init__(server, spider, key, serializer or RequestJSON)
        self.frontier = Frontier.of(spider.crawler)

    def push(self, request: Request) -> None:
        request.meta.pop(CLAIM_META, None)  # a retry's copy: the claim was its original's
        super().push(request)

    def _decode_request(self, encoded_request: Any) -> Request:
        fields = self.serializer.loads(encoded_request)
        check_callbacks(fields, self.spider)
        request: Request = request_from_dict(fields, spider=self.spider)
        return request

    def pop(self, timeout: int = 0) -> Request | None:
        while True:
            taken = self.frontier.take()
            if taken is None:
                return None
            field, data = taken
            try:
                request = self._decode_request(data)
            except (RefusedRequest, ValueError, TypeError, AttributeError) as exc:
                self.frontier.refuse(field, data, exc)
                continue
            request.meta[CLAIM_META] = field
            return request


class RunRedisDupeFilter(RFPDupeFilter):
    """scrapy-redis's fingerprint set, keyed by run, with the crawler's request fingerprints.

    `close()` keeps the set (the run's other processes still use it); it
    expires with the run's keys.
    """

    def __init__(self, server: Any, key: str, debug: bool = False, *,
                 crawler: Crawler | None = None) -> None:
        super().__init__(server, key, debug)
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        frontier = Frontier.of(crawler)
        return cls(frontier.server, frontier.keys.dupefilter,
                   crawler.settings.getbool("DUPEFILTER_DEBUG"), crawler=crawler)

    @classmethod
    def from_spider(cls, spider: Spider) -> Self:
        return cls.from_crawler(spider.crawler)

    def request_fingerprint(self, request: Request) -> str:
        if self.crawler is not None and self.crawler.request_fingerprinter is not None:
            return str(self.crawler.request_fingerprinter.fingerprint(request).hex())
        return str(super().request_fingerprint(request))

    def log(self, request: Request, spider: Spider) -> None:
        if self.crawler is not None and self.crawler.stats is not None:
            self.crawler.stats.inc_value("dupefilter/filtered")
        super().log(request, spider)

    def close(self, reason: str = "") -> None:
        return None


class FrontierScheduler(Scheduler):
    """scrapy-redis's scheduler on the run's keys; done only when the whole run is.

    An engine that found the run's queue empty asks again only at its heartbeat, every
    5 seconds. So the frontier's tick (`kick`, every second) does what that ask would,
    with public engine API: a request that came meanwhile (another process's, or one
    given back) is taken and handed to the engine with `engine.crawl()`, which has it
    ask the scheduler at once (the scheduler serves it, and the engine goes on taking
    from the queue); once the whole run is over, the idle spider is closed.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.frontier = Frontier.of(crawler)
        keys = self.frontier.keys
        super().__init__(self.frontier.server, persist=True, queue_key=keys.requests,
                         queue_cls=FrontierQueue, dupefilter_key=keys.dupefilter,
                         dupefilter_cls=RunRedisDupeFilter, idle_before_close=0)
        self.crawler = crawler
        self.stats = crawler.stats
        self.starved = False  # the engine's last ask found the run's queue empty
        self.handed: deque[Request] = deque()  # taken by `kick`, served before the queue
        self.frontier.scheduler = self

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def open(self, spider: Spider) -> None:
        self.spider = spider
        self.queue = FrontierQueue(self.server, spider, self.queue_key)
        self.df = RunRedisDupeFilter.from_crawler(self.crawler)
        self.frontier.join()

    def close(self, reason: str) -> None:
        # Handed to the engine and never served (the spider closed first): back to the queue.
        while self.handed:
            self.queue.push(self.handed.popleft())
        self.frontier.leave(reason)

    def enqueue_request(self, request: Request) -> bool:
        if request.meta.pop(HANDED_META, False):
            self.handed.append(request)  # taken from the queue already (kick)
            return True
        if not request.dont_filter and self.df.request_seen(request):
            self.df.log(request, self.spider)
            return False
        self.queue.push(request)
        if self.stats is not None:
            self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def next_request(self) -> Request | None:
        request: Request | None = self.handed.popleft() if self.handed else self.queue.pop()
        self.starved = request is None
        if request is not None and self.stats is not None:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def has_pending_requests(self) -> bool:
        # Scrapy asks only once this process is idle: pending is anything left in the run.
        return bool(self.handed) or len(self.queue) > 0 or not self.frontier.run_finished()

    def kick(self) -> None:
        """Every tick, when the engine's last ask found the run's queue empty: hand it a request
        that came since, or close the spider when the whole run is over (what the engine
        itself would do at its next heartbeat)."""
        engine = self.crawler.engine
        # needs_backout: not running, closing, or the downloader or the scraper full.
        if not self.starved or engine.needs_backout():
            return
        request = self.queue.pop()
        if request is not None:
            self.starved = False
            request.meta[HANDED_META] = True
            engine.crawl(request)  # schedules it, and the engine asks the scheduler at once
            if self.stats is not None:
                self.stats.inc_value("newscrawl/frontier/kicks")
        elif engine.spider_is_idle():  # nothing held here, and the run is done everywhere
            self.close_idle_spider()

    def close_idle_spider(self) -> None:
        """What the engine does with an idle spider (ExecutionEngine._spider_idle), through
        public API: `spider_idle` (a handler may keep it open, or name the reason), then
        close_spider_async, for "finished" (or "start_error", as the engine says it)."""
        results = self.crawler.signals.send_catch_log(
            signals.spider_idle, spider=self.crawler.spider, dont_log=(DontCloseSpider, CloseSpider))
        raised = [result.value for _, result in results if isinstance(result, Failure)]
        if any(isinstance(exc, DontCloseSpider) for exc in raised):
            return
        asked = next((exc for exc in raised if isinstance(exc, CloseSpider)), None)
        reason = asked.reason if asked else "start_error" if self.frontier.start_failed else "finished"
        closing = deferred_from_coro(self.crawler.engine.close_spider_async(reason=reason))
        closing.addErrback(lambda failure: logger.error(
            "closing the spider failed", exc_info=failure_to_exc_info(failure)))


async def noting_start_errors(start: AsyncIterator[Any], frontier: Frontier) -> AsyncIterator[Any]:
    """The spider's start() as it comes; an error it raises is noted (the run then closes for
    "start_error", as the engine says it) and passed on."""
    try:
        async for item_or_request in start:
            yield item_or_request
    except CloseSpider:
        raise  # a reason to close, not an error
    except Exception:
        frontier.start_failed = True
        raise


class FrontierSpiderMiddleware:
    """One process seeds a run; the spiders' "asked once" sets become the run's.

    The first process to claim the run schedules what the spider's start()
    yields. The others run start() too, for the state it builds (the share
    spider's stored headlines, which its callbacks read), and drop what it
    yields. A seeding that stops half-way gives its claim back, so a process
    started later with the same run id seeds it again.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        middleware = cls(crawler)
        crawler.signals.connect(middleware.spider_opened, signal=signals.spider_opened)
        return middleware

    def spider_opened(self, spider: Spider) -> None:
        frontier = Frontier.of(self.crawler)
        for name in frontier.shared_sets:
            current = getattr(spider, name, None)
            if isinstance(current, set):
                setattr(spider, name, frontier.claim_set(name, current))

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        frontier = Frontier.of(self.crawler)
        start = noting_start_errors(start, frontier)
        if not frontier.claim_seed():
            logger.info("run %s is seeded by another process: taking work from its queue",
                        frontier.run_id)
            # start() runs here for the state it builds, against sets of this process: what
            # it asks for is the seeder's to ask, and its claims in the run's "asked once"
            # sets would take names from the seeder's own start(), which yields lazily.
            spider = self.crawler.spider
            shared = {name: getattr(spider, name) for name in frontier.shared_sets
                      if isinstance(getattr(spider, name, None), RunClaimSet)}
            for name in shared:
                setattr(spider, name, set())
            try:
                async for _ in start:
                    pass
            finally:
                for name, claims in shared.items():
                    setattr(spider, name, claims)
            return
        if self.crawler.stats is not None:
            self.crawler.stats.set_value("newscrawl/frontier/seeded", 1)
        complete = False
        try:
            async for item_or_request in start:
                yield item_or_request
            complete = True
        finally:
            if complete:
                frontier.mark_seeded()
            else:
                frontier.release_seed()
