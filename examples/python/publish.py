#!/usr/bin/env python3
"""Publish invalog instructions from Python, written only from docs/wire-format.md.

A non-Rust service appends to the invalidation log with nothing but a NATS
client (nats-py) and the wire format: one JSON message per batch for one
refresher, on subject `<prefix>.<refresher name>`, with the batch id as
`Nats-Msg-Id`. This script publishes six batches of different kinds, then
sends the first one again with the same batch id to show that JetStream
stores it once, and prints one line per stored message:

    <sequence> TAB <refresher> TAB <batch id>

    python3 -m pip install nats-py        # Python 3.11 or later
    python3 examples/python/publish.py --url nats://127.0.0.1:4222

The refresher ids must be the ones the nodes registered (the defaults are
those of config/agent.toml). tests/it/python_publisher.rs runs this script
against a real agent and checks that it applied exactly these instructions.
"""

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from datetime import datetime, timezone

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError

FORMAT = 1
MAX_BODY = 1024 * 1024 - 512  # stream max_message_size (1 MiB) minus room for headers
ATTEMPTS = 5  # retries stay well inside the 2-minute duplicate window


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (millis & (1 << 48) - 1) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 64 & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & (1 << 62) - 1  # rand_b
    return str(uuid.UUID(int=value))


def rfc3339_now() -> str:
    """Now in UTC, RFC 3339 with an offset (a naive datetime is invalid)."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def encode(refresher_id, refresher_name, instructions, origin, **provenance):
    """Returns (batch_id, body) of one version-1 message."""
    batch_id = uuid7()
    envelope = {
        "format": FORMAT,
        "batch_id": batch_id,
        "origin": origin,
        "published_at": rfc3339_now(),
        "refresher": {"id": refresher_id, "name": refresher_name},
        "instructions": instructions,
    }
    for key in ("actor", "reason", "trace_id"):
        if provenance.get(key) is not None:
            envelope[key] = provenance[key]
    # UTF-8 without a BOM, no NaN/Infinity, no lone surrogates (the strings
    # here are plain), compact.
    body = json.dumps(envelope, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_BODY:
        raise ValueError(f"message of {len(body)} bytes; split it into several batches")
    return batch_id, body


async def publish(js, stream, prefix, refresher_name, batch_id, body):
    """Publishes one message; returns the PubAck. A timeout is retried with
    the same Nats-Msg-Id, so the stream stores the batch at most once. An
    error PubAck (APIError, for example a message too large) is final."""
    subject = f"{prefix}.{refresher_name}"
    headers = {"Nats-Msg-Id": batch_id}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await js.publish(subject, body, timeout=5.0, stream=stream, headers=headers)
        except (NatsTimeoutError, NoStreamResponseError):
            if attempt == ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def batches(content_id, media_id):
    """(refresher id, refresher name, instructions, provenance) of each batch:
    every instruction kind of format 1 at least once."""
    content, media = (content_id, "content"), (media_id, "media")
    return [
        (*content, [{"kind": "refresh_ids", "ids": [1051, 1052]}],
         {"actor": "job:price-import", "reason": "prices changed", "trace_id": "4bf92f3577b34da6"}),
        (*content, [
            {"kind": "refresh_uuids", "uuids": ["4709a46e-47da-42fb-898a-2d1fc2ba1bf5"]},
            {"kind": "remove_keys", "keys": ["home", "blog/hello-world"]},
        ], {}),
        (*media, [{"kind": "remove_ids", "ids": [7, -1]}], {}),
        (*content, [
            {"kind": "refresh_keys", "keys": ["nav:main"]},
            {"kind": "remove_uuids", "uuids": ["0d4e7a52-97c2-4c7e-8f0b-6c8d1d2f3a4b"]},
            {"kind": "refresh_json", "json": {"path": "/blog", "depth": 2, "tags": ["a", "b"]}},
        ], {"actor": "editor@example.com"}),
        (*media, [{"kind": "refresh_payloads",
                   "payloads": [{"product_id": 7, "new_price": 19.5}, {"product_id": 8, "new_price": 3}]}],
         {}),
        (*content, [{"kind": "refresh_all"}], {"reason": "template deployed"}),
    ]


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server URL(s), comma-separated")
    parser.add_argument("--stream", default="INVALOG", help="[stream] name")
    parser.add_argument("--prefix", default="invalog", help="[stream] subject_prefix")
    parser.add_argument("--origin", default="python-publisher", help="who publishes (origin)")
    parser.add_argument("--content-id", default="91104242-7ad8-41d5-9b2a-7eea69f52bb7",
                        help="UUID of the `content` refresher")
    parser.add_argument("--media-id", default="ea09a239-dbca-4b4e-af30-b000d8c399fc",
                        help="UUID of the `media` refresher")
    args = parser.parse_args()

    nc = await nats.connect(servers=args.url.split(","))
    try:
        js = nc.jetstream()
        first = None
        for refresher_id, name, instructions, provenance in batches(args.content_id, args.media_id):
            batch_id, body = encode(refresher_id, name, instructions, args.origin, **provenance)
            ack = await publish(js, args.stream, args.prefix, name, batch_id, body)
            first = first or (name, batch_id, body, ack.seq)
            print(f"{ack.seq}\t{name}\t{batch_id}", flush=True)

        # A retry of a batch already stored (say its acknowledgement was
        # lost): same bytes, same Nats-Msg-Id. JetStream answers with the
        # original sequence and `duplicate`, and stores nothing.
        name, batch_id, body, seq = first
        ack = await publish(js, args.stream, args.prefix, name, batch_id, body)
        if not ack.duplicate or ack.seq != seq:
            sys.exit(f"the retried batch {batch_id} was stored again: {ack}")
        print(f"retry of {batch_id}: duplicate of sequence {ack.seq}, not stored again", file=sys.stderr)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
