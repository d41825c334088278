"""Reads messages the relay published with the official CloudEvents SDK for Python.

Input (stdin): a JSON list of messages as a broker delivered them, dumped by the Rust tests
(tests/integration/formats.rs, tests/kafka/main.rs):
  {"binding": "kafka" | "rabbitmq" | "http" | "json",  "mode": "binary" | "structured",
   "headers": {name: value}, "content_type": str | null, "key": str | null, "body_base64": str}
"json" is one structured-mode document (a line of the stdout sink).

Output (stdout): a JSON list, one event per message, as the SDK parsed it:
  {"sdk": the SDK function used, "specversion", "id", "source", "type", "subject", "time",
   "datacontenttype", "data": JSON data | {"text": str} | {"base64": str} | null}
Any message the SDK cannot read makes the script fail with the SDK's error.
"""

import base64
import json
import sys

import cloudevents
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
        fn = http.from_binary_event if mode == "binary" else http.from_structured_event
    elif binding == "json":
        return "cloudevents.core.formats.json.JSONFormat.read", JSONFormat().read(None, body)
    else:
        raise ValueError(f"unknown binding {binding!r}")
    return f"{fn.__module__}.{fn.__name__}", fn(msg)


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
