"""The baselines of `tributary bench`: a Faust agent that does nothing with its events,
or one that passes each on (publishes one record per event, every delivery awaited):
the honest ceiling for a scorer that must emit an outcome per event.

Run as a subprocess: `python -m tributary.bench_noop BOOTSTRAP TOPIC EXPECTED BATCH_MAX WAIT_MS OUT [TO_TOPIC]`.
It consumes with the same `take_events` batching as the worker, writes one JSON object
(how many events it saw and how fast) to the file OUT, then exits. With TO_TOPIC it
publishes each batch's records there before taking the next batch. It long-polls as the
worker does: TRIBUTARY_FETCH_MAX_WAIT_MS, when set, limits Faust's fetch wait here too.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time

import faust

from stream.kafka.faust_compat import limit_fetch_wait


def main(bootstrap: str, topic: str, expected: int, batch_max: int, wait_ms: int, out: str,
         to_topic: str | None = None) -> None:
    if os.environ.get("TRIBUTARY_FETCH_MAX_WAIT_MS"):
        limit_fetch_wait(int(os.environ["TRIBUTARY_FETCH_MAX_WAIT_MS"]))
    app = faust.App(
        f"tributary-bench-noop-{int(time.time())}", datadir=tempfile.mkdtemp(prefix="tributary-bench-noop-"),
        broker=f"kafka://{bootstrap}", value_serializer="raw",
        key_serializer="raw", topic_disable_leader=True, web_enabled=False, broker_session_timeout=10.0,
        consumer_auto_offset_reset="earliest", producer_max_batch_size=1,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    sink = app.topic(to_topic, key_serializer="raw", value_serializer="raw") if to_topic else None
    seen = {"n": 0, "first": None, "last": None}

    @app.agent(source, concurrency=1)
    async def noop(stream):
        async for events in stream.take_events(batch_max, within=wait_ms / 1000):
            if sink is not None:
                deliveries = [await sink.send(key=e.message.key, value=e.message.value) for e in events]
                await asyncio.gather(*deliveries)
            now = time.monotonic()
            seen["first"] = seen["first"] or now
            seen["n"] += len(events)
            seen["last"] = now
            if seen["n"] >= expected:
                span = max(seen["last"] - seen["first"], 1e-9)
                with open(out, "w") as handle:  # a file: Faust redirects stdout and writes its spinner there
                    json.dump({"events": seen["n"], "seconds": span, "events_per_s": seen["n"] / span}, handle)
                os._exit(0)  # a measuring subprocess: nothing to commit or clean up

    faust.Worker(app, loglevel=os.environ.get("TRIBUTARY_BENCH_LOGLEVEL", "error"), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
         sys.argv[7] if len(sys.argv) > 7 else None)
