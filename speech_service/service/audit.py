"""Audit entries written off the request's path: `record` only queues; a writer thread appends the
queue to the store every `audit.flush_interval_s`, and keeps a batch the store refused until it
lands (backoff up to `audit.max_retry_delay_s`). A job's entry is not queued: it waits in the job's
record and is written under the job's own key (`write_job`). docs/ARCHITECTURE.md, "Audit"."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from datetime import datetime, timezone

from speech_service.config import AuditSettings
from speech_service.provenance.credentials import SpeechFacts
from speech_service.storage.audit import AuditEntry, AuditStore

logger = logging.getLogger(__name__)


def entry(facts: SpeechFacts, kind: str, fmt: str, output_sha256: str, complete: bool = True) -> AuditEntry:
    """The entry of one speech made, timed now."""
    return AuditEntry(time=datetime.now(timezone.utc), kind=kind, key=facts.key, voice=facts.voice,
                      consent_id=facts.consent_id, model=facts.model, format=fmt, text_sha256=facts.text_sha256,
                      output_sha256=output_sha256, request_id=facts.request_id, complete=complete,
                      speakers=list(facts.speakers))


class AuditLog:
    def __init__(self, store: AuditStore, settings: AuditSettings):
        self.store, self.settings = store, settings
        self.writer = secrets.token_hex(6)  # this process's batches: keys no other writer uses
        self._changed = threading.Condition()
        self._writing = threading.Lock()
        self._pending: deque[AuditEntry] = deque()
        self._batch: tuple[str, list[AuditEntry]] | None = None  # taken from the queue, not yet landed
        self._sequence = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._retry_in: float | None = None  # after a failed write: when to try again (backoff)

    def record(self, facts: SpeechFacts, kind: str, fmt: str, output_sha256: str, complete: bool = True) -> None:
        """Queue the entry of one speech made (never blocks on the store)."""
        self._append(entry(facts, kind, fmt, output_sha256, complete))

    def write_job(self, job_entry: AuditEntry) -> None:
        """Write a delivered job's entry now (blocking), under a key of the job's own: whoever writes
        it again (a retry, a sweep on any replica) finds it there, so it lands exactly once."""
        self.store.append(f"job-{job_entry.request_id}", [job_entry])

    def _append(self, entry: AuditEntry) -> None:
        with self._changed:
            self._pending.append(entry)
            if self._held() > self.settings.max_pending:
                lost = self._pending.popleft()
                logger.error("audit: over %d entries unwritten; dropped request %s's", self.settings.max_pending,
                             lost.request_id)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._write_forever, name="audit writer", daemon=True)
                self._thread.start()

    def _held(self) -> int:
        """Entries not yet landed: queued, and in the batch being written."""
        return len(self._pending) + len(self._batch[1] if self._batch else ())

    def flush(self) -> None:
        """Write every entry queued so far (blocking). Raises what the store raised; the entries
        stay queued, and the writer tries again after its backoff, whoever called."""
        with self._writing:
            try:
                self._write_queued()
            except Exception:
                with self._changed:
                    self._retry_in = min(2 * (self._retry_in or 0.25), self.settings.max_retry_delay_s)
                    self._changed.notify_all()
                raise
            with self._changed:
                self._retry_in = None

    def _write_queued(self) -> None:
        while True:
            with self._changed:
                if self._batch is None:
                    if not self._pending:
                        return
                    self._sequence += 1
                    self._batch = (f"{self.writer}-{self._sequence:08d}", list(self._pending))
                    self._pending.clear()
                batch_id, entries = self._batch
            self.store.append(batch_id, entries)
            with self._changed:
                self._batch = None

    def _write_forever(self) -> None:
        while True:
            with self._changed:
                retry_in = self._retry_in
                self._changed.wait_for(lambda seen=retry_in: self._closed or self._retry_in != seen,
                                       timeout=retry_in or self.settings.flush_interval_s)
                if self._closed:
                    return
                if self._retry_in != retry_in:
                    continue  # a write failed elsewhere: wait out its backoff, then try
            try:
                self.flush()
            except Exception as exc:
                logger.warning("audit: could not write entries (retrying in %.1f s): %s", self._retry_in, exc)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and write what is queued, trying until `timeout_s` has passed."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.flush()
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    logger.error("audit: %d entries could not be written before shutdown: %s", self._held(), exc)
                    return
                time.sleep(0.5)
