"""What the database server can do, read once at connect: the one place that asks which it is.

Production is MongoDB; development, tests and CI use FerretDB 1.24 (SQLite), built
with the project's patches (tools/ferretdb/patches: `_id` finds and indexed filters
on top-level fields are served by SQLite indexes). The storage algorithm is one; what
differs is read here into `Capabilities`, and the store and the near-duplicate linker
ask it, never which server it is:

- `atomic_replace`: a replace filtered on the record's write counter is atomic
  (MongoDB), so the guard goes in the filter. FerretDB reads and writes a document in
  two steps outside a transaction: the store reads the record again by `_id` just
  before replacing it (read-then-write; a window of milliseconds remains).
- `bulk_chunk`: ops per bulk-write command. FerretDB's SQLite backend holds a pooled
  connection per update statement until the command ends and deadlocks at 100.
- `text_index`: the server can hold the `words` text index (FerretDB cannot: the
  store keeps a word index of postings instead, pipelines.word_index).
- `band_candidates`: where near-duplicate candidates come from (pipelines.neardup):
  `index`, a `minhash_bands $in` find; `memory`, a band index loaded from the
  collection at the first write and linked again from the collection at close. Both
  are right on both servers; memory is the faster on FerretDB (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

BandSource = Literal["index", "memory"]


@dataclass(frozen=True)
class Capabilities:
    server: str  # name and version, for the log
    atomic_replace: bool
    bulk_chunk: int | None
    text_index: bool
    band_candidates: BandSource

    @classmethod
    def of_build_info(cls, build_info: Any) -> Capabilities:
        """The capabilities of the server that answered `buildInfo` with `build_info`."""
        if "ferretdbVersion" in build_info:
            version = build_info["ferretdbVersion"]  # "unknown" from an embedded build
            return cls(f"FerretDB {version}" if version != "unknown" else "FerretDB", atomic_replace=False,
                       bulk_chunk=16, text_index=False, band_candidates="memory")
        return cls(f"MongoDB {build_info.get('version', '?')}", atomic_replace=True,
                   bulk_chunk=None, text_index=True, band_candidates="index")

    @classmethod
    def detect(cls, db: Any) -> Capabilities:
        """Ask the server (a `buildInfo` command); what it lacks goes to the log, once a process."""
        capabilities = cls.of_build_info(db.client.admin.command("buildInfo"))
        if capabilities not in _REPORTED:
            _REPORTED.add(capabilities)
            for gap in capabilities.gaps():
                logger.warning("%s: %s", capabilities.server, gap)
        return capabilities

    def gaps(self) -> list[str]:
        """What the store does otherwise on this server, one line each."""
        gaps = []
        if not self.atomic_replace:
            gaps.append("updates are not atomic: a replace is guarded by reading the record "
                        "again just before it (a window of milliseconds where two writers of "
                        "one article can lose one update)")
        if self.bulk_chunk:
            gaps.append(f"bulk writes go in commands of {self.bulk_chunk} ops")
        if not self.text_index:
            gaps.append("no text index: word search reads the word index the store keeps "
                        "(pipelines.word_index)")
        if self.band_candidates == "memory":
            gaps.append("near-duplicate candidates come from a band index in memory, linked "
                        "again from the collection at close")
        return gaps


_REPORTED: set[Capabilities] = set()


def is_ferretdb(db: Any) -> bool:
    """Whether `db` is served by FerretDB (tests and benches that measure its gaps ask this)."""
    return "ferretdbVersion" in db.client.admin.command("buildInfo")
