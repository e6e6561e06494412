"""The API's refusals: ApiError (shown to the user as it is) and Invalid (field by field).

Their own module so that every part of the API server (api.py and the modules it is made of,
dispatch.py, the REST layer) raises and catches the same classes without importing ApiServer."""

from __future__ import annotations


class ApiError(Exception):
    """A refused request; the message is shown to the user as it is."""


class Invalid(ApiError):
    """An object refused field by field: KIND "NAME" is invalid, with (field, problem) pairs (the
    REST endpoint answers 422 Invalid with them as causes)."""

    def __init__(self, kind: str, name: str, problems: list[tuple[str, str]]):
        self.kind, self.name, self.problems = kind, name, problems
        text = "; ".join(f"{f}: {m}" if f else m for f, m in problems)
        super().__init__(f'{kind} "{name}" is invalid: {text}')
