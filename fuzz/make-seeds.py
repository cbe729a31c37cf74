#!/usr/bin/env python3
"""Writes the hand-made seeds of the byte-oriented fuzz targets into fuzz/seeds/.

Seeds come from real traffic: the SDKs' CONNECT usernames and passwords, the
topics and payloads of shared/spec/iothub-protocol.md, and every query of
crates/query/tests/data/query-corpus.json. The committed corpora (fuzz/corpus/<target>) are
these seeds plus what fuzzing found, minimized with `cargo fuzz cmin`; rerun this
only to change the seeds, then merge them in (see docs/reliability.md).

Usage: python3 fuzz/make-seeds.py [path/to/query-corpus.json]
"""

import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")

NODE_USER = ("localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4"
             "%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)")
PY_USER = ("localhost/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py"
           "%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29")
PNP_NODE = ("localhost/dev1/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1"
            "&DeviceClientType=azure-iot-device%2F1.18.4")
PNP_PY = "localhost/dev1/?api-version=2020-09-30&DeviceClientType=py&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"
MODULE_USER = "localhost/dev1/m1/?api-version=2021-04-12&DeviceClientType=x"
NO_QUESTION = "localhost/dev1/api-version=2018-06-30"
DEVICE_TOKEN = ("SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=DCJ6d1jZ0ENszlXUvUg48Ipb"
                "%2BJa3mRJgokk75TJd0tc%3D&se=1795735138")
NODE_SERVICE_TOKEN = ("SharedAccessSignature sr=localhost&sig=DCJ6d1jZ0ENszlXUvUg48Ipb%2BJa3mRJgokk75TJd0tc%3D"
                      "&skn=iothubowner&se=1795735138")
PY_SERVICE_TOKEN = ("SharedAccessSignature sr=localhost&sig=OvD3iF3a28b2PznsXX/1MNpHbQ0shdOBuS6N9ymvWpQ%3D"
                    "&se=1795735138&skn=iothubowner")
DOCS_TOKEN = ("SharedAccessSignature sig=OvD3iF3a28b2PznsXX%2F1MNpHbQ0shdOBuS6N9ymvWpQ%3D&se=1795735138"
              "&skn=service&sr=myhub.azure-devices.net%2Fdevices")
KEY = "mWO5BwVcGazLPWaM72g972iq7Yqk06qHMS+RRg1Z4Ss="
RID = "9ec93593-13ae-4711-bd9d-45faf055e52c"

DEVICE_TOPICS = [
    f"$iothub/twin/GET/?$rid={RID}",
    f"$iothub/twin/PATCH/properties/reported/?$rid={RID}",
    "$iothub/twin/PATCH/properties/reported/?$rid=1&$version=5",
    "devices/dev1/messages/events/",
    "devices/dev1/modules/m1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
    "$iothub/methods/res/200/?$rid=2a",
]
HUB_TOPICS = [
    f"$iothub/twin/res/200/?$rid={RID}",
    f"$iothub/twin/res/204/?$rid={RID}&$version=8",
    "$iothub/twin/PATCH/properties/desired/?$version=8",
    "$iothub/methods/POST/reboot/?$rid=1",
    "devices/dev1/messages/devicebound/",
    "devices/dev1/modules/m1/inputs/input1/%24.mid=1",
]
FILTERS = [
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
    "$iothub/methods/POST/#",
    "devices/dev1/messages/devicebound/#",
    "devices/dev1/modules/m1/inputs/#",
]
REPORTED = b'{"firmware":{"version":"1.2.1"},"fanOn":false,"minTemperature":68,"maxTemperature":92}'


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def mqtt_string(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    out = bytearray([first])
    n = len(body)
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def connect(client_id, username, password, keep_alive, clean=False):
    flags = 0xC0 | (0x02 if clean else 0)
    body = mqtt_string("MQTT") + bytes([4, flags]) + struct.pack(">H", keep_alive)
    body += mqtt_string(client_id) + mqtt_string(username) + mqtt_string(password)
    return packet(0x10, body)


def publish(topic, payload, qos=0, packet_id=1):
    body = mqtt_string(topic) + (struct.pack(">H", packet_id) if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def subscribe(packet_id, filters):
    body = struct.pack(">H", packet_id) + b"".join(mqtt_string(f) + bytes([q]) for f, q in filters)
    return packet(0x82, body)


def mqtt_seeds():
    node = connect("dev1", NODE_USER, DEVICE_TOKEN, 180)
    python = connect("dev1", PY_USER, DEVICE_TOKEN, 60)
    node_sub = subscribe(1, [(f, 0) for f in FILTERS[:3]])
    py_sub = subscribe(2, [(f, 1) for f in FILTERS[:4]])
    get = publish(DEVICE_TOPICS[0], b" ", 0)
    get1 = publish(DEVICE_TOPICS[0], b" ", 1, 7)
    patch = publish(DEVICE_TOPICS[1], REPORTED, 1, 8)
    puback = packet(0x40, struct.pack(">H", 3))
    unsub = packet(0xA2, struct.pack(">H", 4) + mqtt_string(FILTERS[1]))
    ping, disconnect = packet(0xC0, b""), packet(0xE0, b"")
    for p in [node, python, node_sub, py_sub, get, get1, patch, puback, unsub, ping, disconnect,
              connect("dev1/m1", MODULE_USER, DEVICE_TOKEN, 60, clean=True)]:
        write("mqtt_decode", p)
    # Whole conversations, as the SDKs send them (spec §3.5).
    write("mqtt_decode", node + node_sub + get + patch + ping + disconnect)
    write("mqtt_decode", python + get1 + py_sub + patch + puback + disconnect)


def topic_seeds():
    for t in DEVICE_TOPICS + HUB_TOPICS + FILTERS + [NODE_USER, PY_USER, PNP_NODE, PNP_PY,
                                                    MODULE_USER, NO_QUESTION]:
        write("topic", t)


def sas_seeds():
    for t in [DEVICE_TOKEN, NODE_SERVICE_TOKEN, PY_SERVICE_TOKEN, DOCS_TOKEN,
              f"HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}",
              f"HostName=localhost;DeviceId=dev1;SharedAccessKey={KEY}",
              f"HostName=localhost;DeviceId=dev1;ModuleId=m1;SharedAccessKeyName=device;SharedAccessKey={KEY}",
              f"HostName=localhost;DeviceId=dev1;SharedAccessSignature={DEVICE_TOKEN}",
              '"AAAAAAAAAAE="', '"*"', 'W/"AAAAAAAAAAE="',
              "localhost/devices/dev1 localhost/devices/dev1/modules/m1\nlocalhost/devices/a localhost/devices/ab"]:
        write("sas", t)


def query_seeds(corpus_path):
    with open(corpus_path) as f:
        corpus = json.load(f)
    queries = {c["query"] for c in corpus["cases"] + corpus["paging_cases"]}
    for q in sorted(queries):
        if len(q) < 1000:
            write("query", q)
    # A query with a continuation token (the \n\0 separator of the query target).
    write("query", "SELECT * FROM devices\n\0eyJ2IjoxLCJxIjoiYWJjIiwibiI6MiwiZCI6ImRldjEifQ")
    write("query", "SELECT COUNT() AS n FROM devices GROUP BY tags.x\n\0e30")


def main():
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        HERE, "..", "crates", "query", "tests", "data", "query-corpus.json")
    mqtt_seeds()
    topic_seeds()
    sas_seeds()
    query_seeds(corpus)


if __name__ == "__main__":
    main()
