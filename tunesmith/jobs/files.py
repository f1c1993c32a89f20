"""Uploaded files: stored under generated ids in ``<home>/files/``, size-limited while the body
streams in, validated once stored (the file object's ``status`` / ``status_details``)."""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select

from tunesmith.data.validate import validate_file
from tunesmith.errors import APIError, not_found
from tunesmith.jobs.db import Database, FileRow

MIN_TRAINING_EXAMPLES = 10  # as OpenAI's fine-tuning API
PURPOSES = {"fine-tune", "batch", "assistants", "vision", "user_data", "evals"}  # uploads; the server writes "fine-tune-results"


def sanitise_filename(name: str | None) -> str:
    """Kept only as a label: the base name, safe characters, at most 255 of them.

    >>> sanitise_filename("../../etc/pass wd.jsonl")
    'pass_wd.jsonl'
    """
    base = os.path.basename((name or "upload").replace("\\", "/"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:255] or "upload"


class _MultipartUpload:
    """One multipart upload body, fed to python-multipart's push parser as it arrives; the parser
    calls the ``on_*`` methods (named as its callbacks). The ``file`` part is written to ``out``
    (size-checked per chunk, hashed); the other fields are kept in memory, 4 kB each at most."""

    CALLBACKS = ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
                 "on_part_data", "on_end")
    MAX_HEADER_SIZE = 16 * 1024  # room for a long file name, which is then cut to 255

    def __init__(self, out: BinaryIO, max_bytes: int):
        self.out, self.max_bytes = out, max_bytes
        self.size, self.digest, self.filename = 0, hashlib.sha256(), None
        self.seen = self.complete = False  # a ``file`` part; the closing boundary
        self.fields: dict[str, bytes] = {}
        self._headers: dict[bytes, bytes] = {}
        self._header_field = self._header_value = b""
        self._name: str | None = None  # the current part's form field

    async def receive(self, stream: AsyncIterator[bytes], boundary: bytes) -> None:
        callbacks = {name: getattr(self, name) for name in self.CALLBACKS}
        parser = MultipartParser(boundary, callbacks=callbacks, max_header_size=self.MAX_HEADER_SIZE)
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as e:
                raise APIError(400, f"The multipart body does not parse: {e}", "invalid_multipart") from None

    def purpose(self) -> str:
        """The upload's ``purpose``, once the body is known to be whole and to hold a file (400s)."""
        if not self.complete:
            raise APIError(400, "The upload ended before its closing multipart boundary (cut off?); nothing was "
                           "stored. Send it again.", "incomplete_upload", "file")
        purpose = self.fields.get("purpose", b"").decode(errors="replace").strip()
        if not self.seen:
            raise APIError(400, "Missing required parameter: 'file'.", "missing_required_parameter", "file")
        if purpose not in PURPOSES:
            raise APIError(400, f"'{purpose}' is not one of {sorted(PURPOSES)} - 'purpose'", "invalid_value",
                           "purpose")
        return purpose

    def on_part_begin(self) -> None:
        self._headers, self._header_field, self._header_value, self._name = {}, b"", b"", None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode()
        if self._name == "file":
            self.filename, self.seen = options.get(b"filename", b"upload").decode(errors="replace"), True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._name != "file":
            name = (self._name or "")[:64]
            self.fields[name] = (self.fields.get(name, b"") + chunk)[:4096]  # form fields are short
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise APIError(413, f"File is larger than the {self.max_bytes:,}-byte upload limit.", "file_too_large", "file")
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_end(self) -> None:
        self.complete = True


class FileStore:
    def __init__(self, db: Database, directory: Path, max_bytes: int):
        self.db, self.directory, self.max_bytes = db, directory, max_bytes
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.directory / file_id  # ids are generated here, never taken from the request

    async def save_multipart(self, stream: AsyncIterator[bytes], boundary: bytes, owner: str | None = None) -> dict:
        """Parse a multipart body as it arrives: the ``file`` part goes straight to a partial file
        (size-checked per chunk), the other fields (``purpose``) are kept in memory. A body that
        ends before its closing boundary (a client cut off mid-upload) or does not parse is a 400
        and leaves nothing: records are never stored half-received."""
        file_id = "file-" + secrets.token_hex(12)
        partial = self.directory / f".{file_id}.part"
        try:
            with open(partial, "wb") as out:
                upload = _MultipartUpload(out, self.max_bytes)
                await upload.receive(stream, boundary)
            purpose = upload.purpose()
            os.replace(partial, self.path(file_id))
        finally:
            partial.unlink(missing_ok=True)  # an aborted, refused or over-limit upload leaves nothing behind
        return self._record_upload(file_id, upload, purpose, owner)

    def _record_upload(self, file_id: str, upload: _MultipartUpload, purpose: str, owner: str | None) -> dict:
        """The stored upload validated, then recorded under its sanitised name."""
        filename = sanitise_filename(upload.filename)
        status, details = self._validate(file_id, purpose, filename)
        row = FileRow(id=file_id, filename=filename, purpose=purpose,
                      bytes=upload.size, created_at=int(time.time()), status=status, status_details=details,
                      sha256=upload.digest.hexdigest(), owner=owner)
        with self.db.session() as session:
            session.add(row)
        return file_object(row)

    def save_bytes(self, filename: str, content: bytes, purpose: str = "fine-tune", min_examples: int | None = None) -> dict:
        """Store content the server made itself (e.g. a dataset of reviewed answers) as a file,
        validated like an upload (``min_examples``: fewer for validation and test splits)."""
        file_id = "file-" + secrets.token_hex(12)
        partial = self.directory / f".{file_id}.part"
        partial.write_bytes(content)
        os.replace(partial, self.path(file_id))
        filename = sanitise_filename(filename)
        status, details = self._validate(file_id, purpose, filename, min_examples)
        row = FileRow(id=file_id, filename=filename, purpose=purpose, bytes=len(content), created_at=int(time.time()),
                      status=status, status_details=details, sha256=hashlib.sha256(content).hexdigest())
        with self.db.session() as session:
            session.add(row)
        return file_object(row)

    def require_trainable(self, file_id: str, param: str) -> None:
        """A job trains only on a file uploaded for fine-tuning: any other purpose (``batch``,
        ``assistants``, a results file) is a 400 naming the field, as a missing file is."""
        with self.db.session() as session:
            row = session.get(FileRow, file_id)
        if row is None:
            raise APIError(400, f"invalid {param}: no file with id '{file_id}' exists.", "invalid_request_error", param)
        if row.purpose != "fine-tune":
            raise APIError(400, f"invalid {param}: {file_id} was uploaded with purpose '{row.purpose}'; fine-tuning "
                           "needs a file uploaded with purpose 'fine-tune'.", "invalid_value", param)

    def require_examples(self, file_id: object, param: str, minimum: int = MIN_TRAINING_EXAMPLES) -> None:
        """Refuse up front a file too small to train on: a validation or test split is stored valid
        with fewer examples (see save_bytes) and must not become a job that fails in the worker."""
        if not isinstance(file_id, str):
            return  # a missing or malformed id is the job's own error to report
        with self.db.session() as session:
            row = session.get(FileRow, file_id)
        if row is None or row.status != "processed" or row.purpose != "fine-tune":
            return
        with open(self.path(file_id), "rb") as f:  # a record per line: only a short file can be too small
            short = sum(1 for _, line in zip(range(minimum + 2), f) if line.strip()) <= minimum + 1
        if not short:
            return
        report = validate_file(self.path(file_id), min_examples=minimum)
        if not report.ok:
            raise APIError(400, f"{param} {file_id} ({row.filename}) has {len(report.records)} example(s); "
                           f"fine-tuning needs at least {minimum}.", "invalid_value", param)

    def _validate(self, file_id: str, purpose: str, filename: str, min_examples: int | None = None) -> tuple[str, str | None]:
        if purpose != "fine-tune":
            return "processed", None
        report = validate_file(self.path(file_id)) if min_examples is None else \
            validate_file(self.path(file_id), min_examples=min_examples)
        if report.ok:
            return "processed", None
        # Problems name the file as its owner knows it, not the server's storage path.
        return "error", report.summary(limit=10).replace(str(self.path(file_id)), filename)

    def get(self, file_id: str) -> FileRow:
        with self.db.session() as session:
            row = session.get(FileRow, file_id)
        if row is None:
            raise not_found("file", file_id)
        return row

    def list(self, purpose: str | None, limit: int, after: str | None, order: str) -> tuple[list[dict], bool]:
        with self.db.session() as session:
            query = select(FileRow)
            if purpose:
                query = query.where(FileRow.purpose == purpose)
            rows = list(session.scalars(query.order_by(FileRow.created_at, FileRow.id)))
        if order == "desc":
            rows.reverse()
        if after:
            ids = [r.id for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        return [file_object(r) for r in rows[:limit]], len(rows) > limit

    def delete(self, file_id: str) -> dict:
        with self.db.session() as session:
            row = session.get(FileRow, file_id)
            if row is None:
                raise not_found("file", file_id)
            session.delete(row)
        self.path(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}


def file_object(row: FileRow) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at, "expires_at": None,
            "filename": row.filename, "purpose": row.purpose, "status": row.status,
            "status_details": row.status_details}
