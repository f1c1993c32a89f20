"""Domain errors. Only the edges (CLI, HTTP) translate these into exit codes or statuses.

Every message says what failed, where, and how to fix it.
"""
from __future__ import annotations


class TunesmithError(Exception):
    """Base class of every error tunesmith raises on purpose."""

    exit_code = 1


class ConfigError(TunesmithError):
    """A config file or override is invalid. ``problems`` lists every problem found, not just the first."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        detail = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(message + detail)


class DataError(TunesmithError):
    """A data file failed validation. ``report`` holds every issue with its line and field."""

    exit_code = 3

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)


class ModelNotFound(TunesmithError):
    exit_code = 4


class RunNotFound(TunesmithError):
    exit_code = 4


class TemplateError(TunesmithError):
    """A chat template cannot be used for assistant-only loss (it does not render prefixes stably)."""

    exit_code = 2


class TrainingDiverged(TunesmithError):
    """The loss or the gradient norm stopped being a finite number: training was stopped, the
    last good checkpoint kept, and nothing published."""

    exit_code = 5


class DiskFull(TunesmithError):
    """Training stopped because the disk filled up: the last complete checkpoint is kept and the
    partial one deleted, so the run resumes once there is space."""

    exit_code = 6


class ExportError(TunesmithError):
    """An export that cannot be made (a classifier to GGUF, a run without weights, no room on the
    disk): nothing is left under the output name. ``param``: the option at fault (format, quant)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ParityFailed(TunesmithError):
    """The export was written, but answers differently from the trained model on the parity set
    (a template, a stop token or quantisation loss): the report beside it says where."""

    exit_code = 7

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


# ── errors in OpenAI's shape ───────────────────────────────────────────────────────────────
# ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status the SDK maps to its
# exception classes (400 BadRequest, 401 Authentication, 404 NotFound, 413, 429). Raised by the
# serving and job layers (which know the request's field names), answered by the web layer.


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(kind: str, ident: str, code: str | None = None) -> APIError:
    return APIError(404, f"No {kind} with id '{ident}' exists.", code or f"{kind}_not_found")


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found",
                    "model")
