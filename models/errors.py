"""The root of Tributary's own errors.

Every error the project raises on purpose derives from `TributaryError`: bad input, a
bad file or world, a missing or refused model, a broker that is away or misconfigured.
Its message is one line that says what to do next; the `tributary` command prints it
so, without a traceback. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class TributaryError(Exception):
    """An error a user can cause or fix; `str(error)` says how."""
