"""Where decoders report the samples they reject, so rejects never travel with the data.

Decoders return only good rows; each rejected sample goes to a ``QuarantineLog``. Under
Ray the log is a small actor (``remote_quarantine_log``) that every decoder actor
reports to, on any node; in a plain loop it is the same class used in-process. Entries
are keyed by (source, reason), so a retried batch cannot count a sample twice.
"""

from __future__ import annotations

import ray

from deepfusion.sources import Quarantined


class QuarantineLog:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Quarantined] = {}

    def add(self, entries: list[Quarantined]) -> None:
        for entry in entries:
            self._entries[(entry.source, entry.reason)] = entry

    def entries(self) -> list[Quarantined]:
        return sorted(self._entries.values(), key=lambda e: e.source)


def decode_failure(err: Exception) -> str:
    """The quarantine reason for a sample whose decoding raised ``err``.

    A ``MediaError`` already names the file and what is wrong. Anything else (an OpenCV,
    PyAV, libsndfile or PIL failure we did not foresee, a ``MemoryError``) is kept with its
    type, so the sample is skipped and the job goes on, and the reason says what happened.
    """
    from deepfusion.media import MediaError

    if isinstance(err, MediaError):
        return str(err)
    return f"decoder failed: {type(err).__name__}: {err}"[:2000]


def remote_quarantine_log():
    """A ``QuarantineLog`` actor; it holds a few strings, so it takes no CPU slot."""
    return ray.remote(num_cpus=0)(QuarantineLog).remote()


def report(log, entries: list[Quarantined]) -> None:
    """Add ``entries`` to a local log or a log actor (waiting, so none is lost on exit)."""
    if not entries:
        return
    if isinstance(log, QuarantineLog):
        log.add(entries)
    else:
        ray.get(log.add.remote(entries))


def collect(log) -> list[Quarantined]:
    """All entries; a log actor is ended afterwards (one per job, not one left per run)."""
    if isinstance(log, QuarantineLog):
        return log.entries()
    entries = ray.get(log.entries.remote())
    ray.kill(log)
    return entries
