"""Interop with an independent WebSocket client: Python's `websockets` (asyncio API).

Usage: interop.py PORT HELLO JOIN PUBLISH MAX_MESSAGE, the frames in hex (built by the Rust
test with ringport-proto). Prints one line per observation; the Rust test checks them.
"""
import asyncio
import sys

import websockets

try:  # websockets >= 13 (pip)
    from websockets.asyncio.client import connect
except ImportError:  # the legacy API of older releases (Debian's python3-websockets 10.x)
    from websockets import connect

# The exception for a non-101 answer: InvalidStatus (>= 13) or InvalidStatusCode (legacy).
REFUSED = tuple(
    getattr(websockets.exceptions, name)
    for name in ("InvalidStatus", "InvalidStatusCode")
    if hasattr(websockets.exceptions, name)
)


def status_of(e):
    return e.response.status_code if hasattr(e, "response") else e.status_code


async def main():
    port, hello, join, publish, max_message = sys.argv[1:6]
    url = f"ws://127.0.0.1:{port}/ringport"
    hello, join, publish = (bytes.fromhex(x) for x in (hello, join, publish))
    max_message = int(max_message)

    async with connect(url, subprotocols=["ringport.v1"], max_size=None) as ws:
        print("subprotocol", ws.subprotocol)
        await ws.send(hello)
        welcome = await ws.recv()
        print("welcome", welcome.hex())
        # JOIN fragmented into three frames (an iterable is sent as fragments).
        await ws.send([join[:3], join[3:9], join[9:]])
        print("room_result", (await ws.recv()).hex())
        pong = await ws.ping(b"interop")
        latency = await pong
        print("pong", latency >= 0)
        await ws.send(publish)
        print("publish_ack", (await ws.recv()).hex())
        await ws.close(1000, "done")
        print("close", ws.close_code, ws.close_reason)

    async with connect(url, subprotocols=["ringport.v1"]) as ws:
        await ws.send("a text message")
        try:
            await ws.recv()
            await ws.recv()
        except websockets.exceptions.ConnectionClosed as e:
            print("text_close", e.rcvd.code if e.rcvd else None)

    async with connect(url, subprotocols=["ringport.v1"], max_size=None) as ws:
        await ws.send(b"\0" * (max_message + 1))
        try:
            while True:
                await ws.recv()
        except websockets.exceptions.ConnectionClosed as e:
            print("big_close", e.rcvd.code if e.rcvd else None)

    try:
        async with connect(url, subprotocols=["chat"]) as ws:
            print("refused", "no")
    except REFUSED as e:
        print("refused", status_of(e))

    try:
        async with connect(f"ws://127.0.0.1:{port}/elsewhere", subprotocols=["ringport.v1"]):
            print("not_found", "no")
    except REFUSED as e:
        print("not_found", status_of(e))


asyncio.run(asyncio.wait_for(main(), 60))
