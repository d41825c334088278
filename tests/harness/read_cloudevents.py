"""Reads messages the relay published with the official CloudEvents SDK for Python.

Input (stdin): a JSON list of messages as a broker delivered them, dumped by the Rust tests
(tests/integration/formats.rs, tests/kafka/main.rs):
  {"binding": "kafka" | "rabbitmq" | "http" | "http_v1" | "redis" | "json" | "json_v1",
   "mode": "binary" | "structured" | "auto", "headers": {name: value}, "content_type": str | null,
   "key": str | null, "body_base64": str}
"http" with mode "auto" lets the SDK tell binary from structured, as a receiver does. "http_v1" and
"json_v1" read with the SDK's legacy API (`cloudevents.v1.http.from_http`, `from_json`: the
`cloudevents.http` module of SDK 1.x). "json" is one structured-mode document (a line of the stdout
sink, a Redis structured-mode payload). "redis": a stream entry, its fields (all but `payload`) in
"headers" and `payload` as the body. No CloudEvents binding for Redis exists; the relay names the
fields like the Kafka binding's headers, so binary mode is read with the Kafka binding (what it
proves is that the fields carry valid attributes under those names); structured mode must say
`content-type: application/cloudevents+json` and is read with the JSON event format.

Output (stdout): a JSON list, one event per message, as the SDK parsed it:
  {"sdk": the SDK function used, "specversion", "id", "source", "type", "subject", "time",
   "datacontenttype", "data": JSON data | {"text": str} | {"base64": str} | null}
Any message the SDK cannot read makes the script fail with the SDK's error.
"""

import base64
import json
import sys

from dateutil.parser import isoparse

import cloudevents
import cloudevents.v1.http
from cloudevents.core.bindings import http, kafka, rabbitmq
from cloudevents.core.formats.json import JSONFormat


def parse(message):
    body = base64.b64decode(message["body_base64"])
    binding, mode = message["binding"], message["mode"]
    headers = message.get("headers") or {}
    if binding == "kafka":
        msg = kafka.KafkaMessage(
            headers={k: v.encode("utf-8") for k, v in headers.items()},
            key=message.get("key"),
            value=body,
        )
        fn = kafka.from_binary_event if mode == "binary" else kafka.from_structured_event
    elif binding == "rabbitmq":
        msg = rabbitmq.RabbitMQMessage(
            headers=headers, content_type=message.get("content_type"), body=body
        )
        fn = rabbitmq.from_binary_event if mode == "binary" else rabbitmq.from_structured_event
    elif binding == "http":
        msg = http.HTTPMessage(headers=headers, body=body)
        fn = {
            "binary": http.from_binary_event,
            "structured": http.from_structured_event,
            "auto": http.from_http_event,
        }[mode]
    elif binding == "redis":
        if mode == "structured":
            content_type = headers.get("content-type")
            if content_type != "application/cloudevents+json":
                raise ValueError(f"content-type field {content_type!r}")
            return "cloudevents.core.formats.json.JSONFormat.read", JSONFormat().read(None, body)
        msg = kafka.KafkaMessage(
            headers={k: v.encode("utf-8") for k, v in headers.items()}, key=None, value=body
        )
        fn = kafka.from_binary_event
    elif binding == "json":
        return "cloudevents.core.formats.json.JSONFormat.read", JSONFormat().read(None, body)
    elif binding == "http_v1":
        return "cloudevents.v1.http.from_http", V1(cloudevents.v1.http.from_http(headers, body))
    elif binding == "json_v1":
        return "cloudevents.v1.http.from_json", V1(cloudevents.v1.http.from_json(body))
    else:
        raise ValueError(f"unknown binding {binding!r}")
    return f"{fn.__module__}.{fn.__name__}", fn(msg)


class V1:
    """The legacy API's event (attributes as given, `time` a string) with the core getters."""

    def __init__(self, event):
        self.event = event

    def __getattr__(self, name):
        attribute = name.removeprefix("get_")
        if attribute == "time":
            value = self.event.get("time")
            return lambda: isoparse(value) if value is not None else None
        if attribute == "data":
            return self.event.get_data
        return lambda: self.event.get(attribute)


def data_of(data):
    if data is None:
        return None
    if isinstance(data, (bytes, bytearray)):
        return {"base64": base64.b64encode(data).decode("ascii")}
    if isinstance(data, str):
        return {"text": data}
    return data


def main():
    out = []
    for message in json.load(sys.stdin):
        sdk, event = parse(message)
        time = event.get_time()
        out.append(
            {
                "sdk": f"cloudevents {cloudevents.__version__}: {sdk}",
                "specversion": event.get_specversion(),
                "id": event.get_id(),
                "source": event.get_source(),
                "type": event.get_type(),
                "subject": event.get_subject(),
                "time": time.isoformat() if time is not None else None,
                "datacontenttype": event.get_datacontenttype(),
                "data": data_of(event.get_data()),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
