"""Test doubles for netcoach; see :mod:`tests.fakes.bot_api`."""

from tests.fakes.bot_api import (
    ApiError,
    BotMessage,
    CallRecord,
    FakeBotAPI,
    FakeUser,
    Reply,
    StoredFile,
    UpdateDict,
)

__all__ = [
    "ApiError",
    "BotMessage",
    "CallRecord",
    "FakeBotAPI",
    "FakeUser",
    "Reply",
    "StoredFile",
    "UpdateDict",
]
