"""The sinks on real sockets: RFC 5424 framing, webhook retries and batches, the spool's bound."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import Syslog, Webhook, wait_for  # noqa: E402
from exwatch.errors import InputError  # noqa: E402
from exwatch.watch.model import Alert  # noqa: E402
from exwatch.watch.sinks import SinkError, Spool, WebhookSink, open_sink, syslog_message  # noqa: E402

ALERT = Alert(
    kind="protection_lost",
    time="2021-03-03T06:49:42.5+00:00",
    host='mail"x]',
    address="192.0.2.1",
    port=443,
    wave="proxylogon",
    state="vulnerable",
    previous="mitigated",
    build="15.1.2176.2",
    fix="install KB5000871",
    scan=7,
)
OTHER = dataclasses.replace(ALERT, scan=8)  # another change: another id
EVENT = ALERT.to_dict()


def alert_of(scan: int) -> Alert:
    return dataclasses.replace(ALERT, scan=scan)


# RFC 5424 6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S+) exwatch (\d+) (\S+) \[exwatch@32473 (.*)\] \xef\xbb\xbf\{")


def test_syslog_message_is_rfc5424() -> None:
    msg = syslog_message(ALERT, hostname="watcher", procid=42)
    m = RFC5424.match(msg)
    assert m is not None
    assert int(m.group(1)) == 13 * 8 + 3  # log audit, error
    assert m.group(2) == b"2021-03-03T06:49:42.500000Z"
    assert m.group(5) == b"protection_lost"
    assert b'host="mail\\"x\\]"' in m.group(6)  # escaped per RFC 5424 6.3.3


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_syslog_one_message_per_event(transport: str) -> None:
    listener = Syslog(transport)
    try:
        open_sink(listener.url).send([ALERT, OTHER])
        assert wait_for(lambda: len(listener.messages) == 2, 5)
        assert listener.events() == [ALERT.to_dict(), OTHER.to_dict()]
    finally:
        listener.close()


def test_webhook_retries_then_batches(webhook: Webhook) -> None:
    webhook.fail_next = 2
    sink = WebhookSink(webhook.url, retries=2, backoff=0.01)
    sink.send([ALERT])  # two 500s, then accepted: one object
    assert webhook.posts == 3 and webhook.events == [EVENT]
    sink.send([ALERT, OTHER])  # several: {"events": [...]}
    assert [e["id"] for e in webhook.events] == [ALERT.id, ALERT.id, OTHER.id]
    webhook.fail_next = 10
    with pytest.raises(SinkError) as info:
        WebhookSink(webhook.url, retries=1, backoff=0.01).send([ALERT])
    assert info.value.sent == 0


def test_spool_keeps_the_newest_within_its_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", limit=3)
    spool.replace([alert_of(i) for i in range(5)] + [alert_of(4)])
    assert spool.load() == [alert_of(2), alert_of(3), alert_of(4)] and spool.dropped == 2
    with spool.path.open("a", encoding="utf-8") as fh:
        fh.write('{"kind": "exposed"}\nnot json\n')  # a torn or foreign line is skipped
    assert spool.load() == [alert_of(2), alert_of(3), alert_of(4)]
    spool.replace([])
    assert spool.load() == [] and not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "http://", "syslog+tcp://", "syslog+udp://h:notaport", "file://host/x.jsonl", "x"]
)
def test_bad_sink_urls(url: str) -> None:
    with pytest.raises(InputError):
        open_sink(url)


def test_file_sink_writes_an_event_once_across_restarts(tmp_path: Path) -> None:
    """A restarted watch may send again the batch a kill -9 cut off from the store's record: the file
    sink reads the ids at its end and writes each event once; a last line cut by the kill is ended,
    so the next event is a line of its own."""
    import json

    path = tmp_path / "alerts.jsonl"
    open_sink(f"file://{path}").send([ALERT])
    path.write_bytes(path.read_bytes() + b'{"id": "cut-by-a-ki')  # a kill in the middle of a write
    restarted = open_sink(f"file://{path}")
    restarted.send([ALERT, OTHER])  # ALERT again (the window), OTHER new
    restarted.send([OTHER])  # and again in the same process (a spool resend)
    lines = path.read_text().splitlines()
    assert lines[1] == '{"id": "cut-by-a-ki'
    events = [json.loads(line) for line in lines if line != lines[1]]
    assert [e["id"] for e in events] == [ALERT.id, OTHER.id]
    assert events[0] == json.loads(json.dumps(EVENT, default=str))
