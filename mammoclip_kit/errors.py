"""User errors and how every command line reports them: one line ``error: ...`` on stderr and a non-zero exit.

A *user error* is a problem with the user's files, folders, values or settings (a missing or unreadable file, a
CSV without the expected columns, a corrupted checkpoint, an output folder that would be overwritten). The kit raises
:class:`UserError` (or one of the ``ValueError`` / ``OSError`` subclasses its modules already raise, such as
``SchemaError``, ``DicomError``, ``PreprocessError``) with a message that names the file, row, column or value and
what is wrong. Every CLI's ``main`` is wrapped in :func:`cli_errors`, which turns these exceptions into one line and
exit status 2 instead of a traceback; programming errors (``TypeError``, ``AttributeError``, …) still show one.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of a command that stopped on a user error (argparse uses 2 for bad arguments too).
EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A problem with the user's input, files or settings; the message is shown as one line."""


def user_error_types() -> tuple[type[BaseException], ...]:
    import pickle

    types: list[type[BaseException]] = [ValueError, OSError, KeyError, pickle.UnpicklingError]  # ValueError covers UnicodeDecodeError,
    # json.JSONDecodeError, pandas' EmptyDataError / ParserError and the kit's SchemaError / DicomError / ...
    try:
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - yaml is a dependency
        pass
    try:
        from safetensors import SafetensorError

        types.append(SafetensorError)
    except ImportError:  # pragma: no cover - older safetensors
        pass
    return tuple(types)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (white space collapsed; the type name when the message is empty)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        # "[Errno 13] Permission denied: 'x'" → "x: permission denied (cannot write or create it here)"
        hint = {13: " (no permission to write or create it)", 1: " (read-only location)",
                17: " (a file is in the way)", 20: " (a parent of this path is a file, not a folder)",
                30: " (read-only file system)"}.get(error.errno or 0, "")
        return f"{error.filename}: {error.strerror.lower()}{hint}"
    text = " ".join(str(error.args[0] if isinstance(error, KeyError) and error.args else error).split())
    return text or type(error).__name__


def cli_errors(main: F) -> F:
    """Decorate a CLI ``main``: a user error prints ``error: <one line>`` to stderr and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except user_error_types() as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]
