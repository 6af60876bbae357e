"""Recoverable subscriptions: offsets on broadcasts, replay after a reconnect (on another
replica too), history gaps, and the errors of a recoverable SUBSCRIBE_AUTHORS."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as redis

from gatehouse_authors.events import ChangeStream
from gatehouse_gateway.websocket.protocol import PkgId
from gatehouse_protos.authors.v1 import authors_pb2

# Generous: a loaded two-core machine may take seconds to relay and deliver a change.
WAIT_SECONDS = 20.0


async def _broadcasts(client: Any, count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(client.broadcast(), WAIT_SECONDS) for _ in range(count)]


def _key(offset: str) -> tuple[int, int]:
    milliseconds, _, sequence = offset.partition("-")
    return int(milliseconds), int(sequence)


async def _create(writer: Any, name: str) -> dict[str, Any]:
    reply = await writer.request(PkgId.CREATE_AUTHOR, {"name": name})
    assert reply["status_code"] == 0, reply
    created: dict[str, Any] = reply["data"]
    return created


async def test_a_reconnect_on_another_replica_gets_exactly_what_was_missed(
    serve_gateway: Any, issuer: Any, ws: Any
) -> None:
    prefix = uuid.uuid4().hex[:8]
    async with (
        serve_gateway() as replica_a,
        serve_gateway() as replica_b,
        ws(replica_a, issuer.token("editor")) as writer,
    ):
        async with ws(replica_a, issuer.token("viewer")) as first:
            answer = await first.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": ""})
            assert answer["status_code"] == 0
            assert answer["data"]["recovered"] is True
            start = answer["data"]["offset"]
            await _create(writer, f"{prefix} seen")
            [seen] = await _broadcasts(first, 1)
            assert seen["data"]["name"] == f"{prefix} seen"
            assert _key(seen["offset"]) > _key(start)
        # The socket is gone; three changes happen meanwhile.
        missed = [await _create(writer, f"{prefix} missed {n}") for n in range(3)]
        async with ws(replica_b, issuer.token("viewer"), fmt="protobuf") as second:
            answer = await second.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": seen["offset"]})
            assert answer["data"] == {
                "subscribed": True,
                "offset": seen["offset"],
                "recovered": True,
            }
            replayed = await _broadcasts(second, 3)
            assert [b["data"] for b in replayed] == missed
            live = await _create(writer, f"{prefix} live")
            [after] = await _broadcasts(second, 1)
            assert after["data"] == live
            offsets = [seen["offset"]] + [b["offset"] for b in [*replayed, after]]
            assert sorted(offsets, key=_key) == offsets
            assert len(set(offsets)) == len(offsets)
            # No duplicate follows.
            await second.request(PkgId.GET_AUTHORS, {"name": "no author has this name"})
            assert second.broadcasts == []


async def test_a_replay_longer_than_the_send_queue_is_paced(
    serve_gateway: Any, issuer: Any, ws: Any
) -> None:
    prefix = uuid.uuid4().hex[:8]
    async with (
        serve_gateway(ws_send_queue_size=4) as gateway,
        ws(gateway, issuer.token("editor")) as writer,
    ):
        async with ws(gateway, issuer.token("viewer")) as first:
            answer = await first.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": ""})
            offset = answer["data"]["offset"]
        missed = [await _create(writer, f"{prefix} {n}") for n in range(12)]
        async with ws(gateway, issuer.token("viewer")) as second:
            answer = await second.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": offset})
            assert answer["data"]["recovered"] is True
            replayed = await _broadcasts(second, 12)
            assert [b["data"] for b in replayed] == missed


async def test_an_offset_past_the_retained_history_gets_a_history_gap(
    serve_gateway: Any, issuer: Any, ws: Any, redis_server: Any
) -> None:
    stream = f"test:ws:gap:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_server.url)
    changes = ChangeStream(client, stream, max_events=2, max_age_seconds=3600)
    try:
        async with (
            serve_gateway(authors_stream=stream) as gateway,
            ws(gateway, issuer.token("viewer")) as subscriber,
        ):
            await subscriber.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": ""})
            await changes.append([(1, _event(1, "first"))])
            [first] = await _broadcasts(subscriber, 1)
            later = []
            for n in range(2, 6):
                # One at a time, so that this process's own reader keeps up.
                await changes.append([(n, _event(n, f"later {n}"))])
                later += await _broadcasts(subscriber, 1)
            assert [b["pkg_id"] for b in later] == [100] * 4
            async with ws(gateway, issuer.token("viewer")) as late:
                answer = await late.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": first["offset"]})
                assert answer["status_code"] == 0
                assert answer["data"] == {
                    "subscribed": True,
                    "offset": later[-1]["offset"],
                    "recovered": False,
                }
                # The live stream goes on from the answer's offset.
                await changes.append([(6, _event(6, "after the gap"))])
                [after] = await _broadcasts(late, 1)
                assert after["data"]["name"] == "after the gap"
            # An offset the stream never had is a gap too.
            async with ws(gateway, issuer.token("viewer")) as unknown:
                answer = await unknown.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": "1-0"})
                assert answer["data"]["recovered"] is False
    finally:
        await client.delete(stream)
        await client.aclose()


async def _append(redis_url: str, stream: str, events: list[tuple[int, bytes]]) -> None:
    """Append to `stream` as the relay does."""
    client = redis.Redis.from_url(redis_url)
    try:
        await ChangeStream(client, stream, max_events=100, max_age_seconds=3600).append(events)
    finally:
        await client.aclose()


def _event(author_id: int, name: str) -> bytes:
    author = authors_pb2.Author(id=author_id, name=name, version=1)
    return authors_pb2.AuthorEvent(
        kind=authors_pb2.AuthorEvent.KIND_CREATED, author=author
    ).SerializeToString()


async def test_a_lost_stream_is_a_history_gap_on_open_recoverable_subscriptions(
    serve_gateway: Any, issuer: Any, ws: Any, private_redis: Any
) -> None:
    stream = f"test:ws:lost:{uuid.uuid4().hex}"
    async with (
        serve_gateway(redis_url=private_redis.url, authors_stream=stream) as gateway,
        ws(gateway, issuer.token("viewer")) as recoverable,
        ws(gateway, issuer.token("viewer")) as plain,
    ):
        await recoverable.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": ""})
        await plain.request(PkgId.SUBSCRIBE_AUTHORS)
        await _append(private_redis.url, stream, [(1, _event(1, "before"))])
        [before] = await _broadcasts(recoverable, 1)
        await _broadcasts(plain, 1)
        # Redis restarts without its data: the stream starts again from nothing.
        private_redis.stop()
        await asyncio.wait_for(gateway.hub.lost.wait(), WAIT_SECONDS)
        private_redis.start()
        await asyncio.wait_for(gateway.hub.listening.wait(), WAIT_SECONDS)
        await _append(private_redis.url, stream, [(2, _event(2, "after"))])
        gap, after = await _broadcasts(recoverable, 2)
        assert gap["pkg_id"] == PkgId.HISTORY_GAP
        assert gap["data"] == {"offset": gap["offset"]}
        assert (after["pkg_id"], after["data"]["name"]) == (100, "after")
        # A subscription without an offset gets the change and nothing else.
        [plain_after] = await _broadcasts(plain, 1)
        assert plain_after["data"]["name"] == "after"
        assert before["offset"] != after["offset"]


async def test_bad_offsets_are_refused_and_leave_the_subscription_as_it_was(
    gateway: Any, issuer: Any, ws: Any
) -> None:
    async with ws(gateway, issuer.token("viewer")) as client:
        for bad in ("x", "12", "1-2-3", "-1-0", 7, None, "1" * 21 + "-0"):
            reply = await client.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": bad})
            if bad is None:
                # null is the same as no offset: a plain subscription.
                assert reply["data"] == {"subscribed": True}
                continue
            assert reply["status_code"] == 2, bad
            assert reply["data"]["code"] == "validation_error"
            assert {d["field"] for d in reply["data"]["details"]} == {"offset"}


def client_subscribed(gateway: Any) -> bool:
    """Whether the gateway's only socket is subscribed."""
    [session] = gateway.hub.sessions
    return session in gateway.hub.subscribers


async def test_a_recoverable_subscribe_while_redis_is_down_is_unavailable(
    serve_gateway: Any, issuer: Any, ws: Any, private_redis: Any
) -> None:
    async with (
        serve_gateway(redis_url=private_redis.url) as gateway,
        ws(gateway, issuer.token("viewer")) as client,
    ):
        await client.request(PkgId.SUBSCRIBE_AUTHORS)
        private_redis.stop()
        await asyncio.wait_for(gateway.hub.lost.wait(), WAIT_SECONDS)
        for offset in ("", "1-0"):
            reply = await client.request(PkgId.SUBSCRIBE_AUTHORS, {"offset": offset})
            assert reply["status_code"] == 7
            assert reply["data"]["code"] == "service_unavailable"
        # The plain subscription it had still holds.
        assert client_subscribed(gateway)
        # A plain subscription needs no history.
        reply = await client.request(PkgId.SUBSCRIBE_AUTHORS)
        assert reply["data"] == {"subscribed": True}
