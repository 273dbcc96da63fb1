"""Sealing at rest through the real app: prompts and outputs are envelopes, rotation loses nothing."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from sqlalchemy import select, update

from chittyos.app import App, open_app, sealed_columns
from chittyos.db.models import SecureExecution
from chittyos.errors import ConfigurationError, ProofRejected
from chittyos.execution import ExecutionRequest
from chittyos.signing.rotation import rotate_sealed_values
from chittyos.signing.sealing import key_id, parse_key
from tests.openai_server import OpenAIServer

pytestmark = pytest.mark.anyio


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def raw_rows(app: App) -> list[SecureExecution]:
    async with app.uow.read() as session:
        return list((await session.execute(select(SecureExecution).order_by(SecureExecution.created_at))).scalars())


async def test_prompts_and_outputs_are_stored_sealed_and_read_back_plain(
    app: App, openai_server: OpenAIServer
) -> None:
    view = await app.executions.execute(ExecutionRequest(prompt="privileged: merger terms", user_id="u"))
    (row,) = await raw_rows(app)
    assert row.prompt.startswith("cs1:") and "merger" not in row.prompt
    assert row.chatgpt_response is not None and row.chatgpt_response.startswith("cs1:")
    assert "merger" not in row.chatgpt_response
    assert (await app.executions.status(view.execution_id)).results.chatgpt_response == "Echo: privileged: merger terms"


async def test_a_ciphertext_moved_to_another_row_does_not_open(app: App, openai_server: OpenAIServer) -> None:
    first = await app.executions.execute(ExecutionRequest(prompt="one", user_id="u"))
    second = await app.executions.execute(ExecutionRequest(prompt="two", user_id="u"))
    rows = {str(r.id): r for r in await raw_rows(app)}
    async with app.uow.begin() as session:
        await session.execute(
            update(SecureExecution)
            .where(SecureExecution.id == rows[second.execution_id].id)
            .values(chatgpt_response=rows[first.execution_id].chatgpt_response)
        )
    with pytest.raises(ProofRejected):
        await app.executions.status(second.execution_id)
    assert (await app.executions.status(first.execution_id)).results.chatgpt_response == "Echo: one"


async def test_rotation_reseals_everything_and_an_interrupted_run_finishes_next_time(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    old, new = new_key(), new_key()
    async with open_app(make_settings(chitty_encryption_key=old)) as app:
        ids = [(await app.executions.execute(ExecutionRequest(prompt=f"p{i}", user_id="u"))).execution_id for i in range(5)]

    calls = 0

    def stop_after_first_batch(table: str, scanned: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C

    async with open_app(make_settings(chitty_encryption_key=f"{new},{old}")) as app:
        with pytest.raises(KeyboardInterrupt):
            await rotate_sealed_values(
                uow=app.uow, sealer=app.sealer, sealed=sealed_columns(), batch_size=2, progress=stop_after_first_batch
            )
        partly = [r for r in await raw_rows(app) if not app.sealer.needs_rotation(r.prompt)]
        assert 0 < len(partly) < 5  # the first batch committed, the rest did not

        report = await rotate_sealed_values(uow=app.uow, sealer=app.sealer, sealed=sealed_columns(), batch_size=2)
        assert report.rows_scanned == 5
        assert report.values_resealed == 2 * (5 - len(partly))  # prompt + response of each row left
        again = await rotate_sealed_values(uow=app.uow, sealer=app.sealer, sealed=sealed_columns())
        assert again.values_resealed == 0

    async with open_app(make_settings(chitty_encryption_key=new)) as app:  # the old key is gone
        for i, execution_id in enumerate(ids):
            assert (await app.executions.status(execution_id)).results.chatgpt_response == f"Echo: p{i}"


async def test_the_old_key_missing_before_rotation_is_a_clear_error(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    first, other = new_key(), new_key()
    async with open_app(make_settings(chitty_encryption_key=first)) as app:
        view = await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
    # A start that would seal new rows refuses; the message names the key id, never a key.
    kid = key_id(parse_key(first))
    with pytest.raises(ConfigurationError, match=f"secure_executions.prompt holds values sealed with key id {kid}") as refused:
        async with open_app(make_settings(chitty_encryption_key=other)):
            pass
    assert first not in str(refused.value) and other not in str(refused.value)
    # A command that only reads opens, and the row names the key it needs.
    async with open_app(make_settings(chitty_encryption_key=other), serving=False, create=False) as app:
        with pytest.raises(ProofRejected, match="key"):
            await app.executions.status(view.execution_id)


async def test_a_start_with_only_the_old_key_after_a_rotation_is_refused(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    # A new user rotated, then started with the old key file again: new rows were sealed under
    # the old key and every rotated row failed to open.
    old, new = new_key(), new_key()
    async with open_app(make_settings(chitty_encryption_key=old)) as app:
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
    async with open_app(make_settings(chitty_encryption_key=f"{new},{old}")) as app:
        await rotate_sealed_values(uow=app.uow, sealer=app.sealer, sealed=sealed_columns())
    with pytest.raises(ConfigurationError, match=f"key id {key_id(parse_key(new))}, which is not loaded"):
        async with open_app(make_settings(chitty_encryption_key=old)):
            pass
    async with open_app(make_settings(chitty_encryption_key=new)) as app:
        await app.executions.execute(ExecutionRequest(prompt="q", user_id="u"))


async def test_chat_contents_and_system_prompts_are_sealed_and_rotate_with_the_rest(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    from chittyos.db.models import ChatSession, ChatSessionMessage

    old, new = new_key(), new_key()
    async with open_app(make_settings(chitty_encryption_key=old)) as app:
        created = await app.sessions.create(user_id="u", session_name="s", initial_system_prompt="be terse")
        await app.sessions.add_message(session_id=created.session_id, role="user", content="the secret clause")
        async with app.uow.read() as session:
            contents = list((await session.execute(select(ChatSessionMessage.content))).scalars())
            system_prompt = await session.scalar(select(ChatSession.system_prompt))
        assert len(contents) == 2 and all(c.startswith("cs1:") for c in contents)
        assert not any("secret" in c or "terse" in c for c in contents)
        assert system_prompt is not None and system_prompt.startswith("cs1:") and "terse" not in system_prompt

    async with open_app(make_settings(chitty_encryption_key=f"{new},{old}")) as app:
        report = await rotate_sealed_values(uow=app.uow, sealer=app.sealer, sealed=sealed_columns())
        assert report.values_resealed == 3  # two messages and the system prompt

    async with open_app(make_settings(chitty_encryption_key=new)) as app:
        got = await app.sessions.get(created.session_id)
    assert got.system_prompt == "be terse"
    assert [m.content for m in got.messages or []] == ["be terse", "the secret clause"]


async def test_a_start_with_either_key_alone_after_an_interrupted_rotation_is_refused(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    # A new user killed `keys rotate-encryption` half-way and restarted on the old key file:
    # the one sampled row was still under the old key, so the server started and the rows
    # already re-sealed failed to open.
    old, new = new_key(), new_key()
    async with open_app(make_settings(chitty_encryption_key=old)) as app:
        for i in range(6):
            await app.executions.execute(ExecutionRequest(prompt=f"p{i}", user_id="u"))

    def interrupt(table: str, scanned: int) -> None:
        raise KeyboardInterrupt

    async with open_app(make_settings(chitty_encryption_key=f"{new},{old}")) as app:
        with pytest.raises(KeyboardInterrupt):
            await rotate_sealed_values(
                uow=app.uow, sealer=app.sealer, sealed=sealed_columns(), batch_size=3, progress=interrupt
            )
    for alone, missing in ((old, new), (new, old)):
        with pytest.raises(ConfigurationError, match=f"key id {key_id(parse_key(missing))}, which is not loaded"):
            async with open_app(make_settings(chitty_encryption_key=alone)):
                pass
    async with open_app(make_settings(chitty_encryption_key=f"{new},{old}")) as app:
        report = await rotate_sealed_values(uow=app.uow, sealer=app.sealer, sealed=sealed_columns())
        assert report.values_resealed == 2 * 3
    async with open_app(make_settings(chitty_encryption_key=new)):
        pass
