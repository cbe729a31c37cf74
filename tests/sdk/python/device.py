"""The device endpoint through the official Python device SDK (azure-iot-device
2.14 over paho-mqtt), transport from DEVICE_TRANSPORT: "mqtt" (MQTT/TLS on
8883) or "ws" (websockets=True, wss://localhost:443/$iothub/websocket).
Spec §2 (CONNECT, sessions, one connection per identity), §3 (twin GET,
reported PATCH, desired notifications, error responses), §10.

Covers: connect; twin GET shape (desired/reported `$version`, no `$metadata`,
no tags); a nested reported patch (reported `$version` and twin `version` move,
the twin etag does not); a bad reported patch refused with ClientError and
changing nothing; desired notifications in `$version` order (None deletes,
replace_twin, `{"properties":{"desired":null}}`); presence; surviving a
server-side kick by a second raw paho connection with the same identity (the
SDK reconnects with clean session 0 and sends no SUBSCRIBE, yet still gets
desired patches and twin responses); refused connections (wrong key, disabled
device, expired token).

The SDK's paho client is traced (CONNECT, SUBSCRIBE, PUBLISH in and out,
socket drops) by wrapping paho's private send/handle methods, so the script
asserts what went over the wire and prints the trace when it fails.

Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX, DEVICE_TRANSPORT,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem (also given to the device SDK as
     server_verification_cert)
"""

import base64
import datetime
import hashlib
import hmac
import ssl
import sys
import threading
import time
import urllib.parse

import paho.mqtt.client as paho
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device.exceptions import ClientError, CredentialError
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin, TwinProperties

import common
from common import CheckFailed, check, check_eq, env, info, main, step, user_props, with_wrong_key

# The harness waits longer, but a device script must fail well under a minute.
common.SCRIPT_TIMEOUT_S = 55

TRANSPORT = env("DEVICE_TRANSPORT")
check(TRANSPORT in ("mqtt", "ws"), f"DEVICE_TRANSPORT must be mqtt or ws, got {TRANSPORT!r}")
WEBSOCKETS = TRANSPORT == "ws"
PREFIX = env("TEST_PREFIX")
with open(env("REQUESTS_CA_BUNDLE")) as f:
    CA = f.read()

# ------------------------------------------------------------------ wire trace

WIRE = []  # (connection number, direction, what)
_conn = [0]


def _traced(name, record):
    original = getattr(paho.Client, name)

    def wrapper(self, *args, **kwargs):
        if not getattr(self, "_twinhub_raw", False):
            record(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    setattr(paho.Client, name, wrapper)


def _on_connect(self, keepalive):
    _conn[0] += 1
    WIRE.append((_conn[0], ">", f"CONNECT clean={int(self._clean_session)} keepalive={keepalive}"))


_traced("_send_connect", _on_connect)
_traced("_send_subscribe", lambda self, dup, topics, *a, **k: WIRE.append((_conn[0], ">", "SUBSCRIBE " + ",".join(t.decode() for t, _ in topics))))
_traced("_send_publish", lambda self, mid, topic, *a, **k: WIRE.append((_conn[0], ">", f"PUBLISH {topic.decode() if isinstance(topic, bytes) else topic}")))
_traced("_handle_on_message", lambda self, message: WIRE.append((_conn[0], "<", f"PUBLISH {message.topic}")))
_traced("_do_on_disconnect", lambda self, rc, *a, **k: WIRE.append((_conn[0], "-", f"disconnected rc={rc}")))


def wire_trace(start=0):
    return "\n      ".join(f"#{c} {d} {w}" for c, d, w in WIRE[start:])


# ------------------------------------------------------------------ helpers


def within(seconds, what, fn, *args, **kwargs):
    """Runs a blocking SDK call with a deadline: the sync SDK has none."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CheckFailed(f"timed out after {seconds} s: {what}")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def eventually(what, condition, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise CheckFailed(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def sas_token(resource, key, expiry):
    sr = urllib.parse.quote(resource, safe="")
    signature = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(signature).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"


def patch_twin_json(rm, device_id, body):
    """PATCH /twins/{id} with a literal JSON body through the service SDK's own
    msrest client: its Twin model drops None members, so
    `{"properties":{"desired":null}}` cannot be sent through update_twin."""
    ops = rm.protocol.devices
    url = ops._client.format_url(ops.update_twin.metadata["url"], id=ops._serialize.url("id", device_id, "str"))
    headers = {"Content-Type": "application/json; charset=utf-8", "If-Match": '"*"'}
    request = ops._client.patch(url, {"api-version": ops.api_version}, headers, body)
    response = ops._client.send(request, stream=False)
    check_eq(response.status_code, 200, f"PATCH /twins/{device_id} {body}: status ({response.text})")


def new_client(cs, **kwargs):
    return IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA, websockets=WEBSOCKETS, **kwargs)


def expect_refused(what, client):
    try:
        within(15, f"{what}: connect()", client.connect)
    except (CredentialError, ClientError) as err:
        cause = err.__cause__
        info(f"{what} -> {type(err).__name__}: {err} (cause: {type(cause).__name__}: {cause})")
        # The hub answers CONNACK 5 (Not authorized), which Python maps to
        # UnauthorizedError and surfaces as CredentialError (spec §2.3).
        check(isinstance(err, CredentialError), f"{what}: expected CredentialError, got {type(err).__name__}: {err}")
        return
    finally:
        within(10, f"{what}: shutdown()", client.shutdown)
    raise CheckFailed(f"{what}: connect() succeeded")


# ------------------------------------------------------------------ the test


def run():
    rm = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    device_id = f"{PREFIX}dev1"
    device = within(10, "create device", rm.create_device_with_sas, device_id, None, None, "enabled")
    key = device.authentication.symmetric_key.primary_key
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"

    def twin_of():
        return within(10, "get_twin (service)", rm.get_twin, device_id)

    def device_of():
        return within(10, "get_device", rm.get_device, device_id)

    client = new_client(cs)
    try:
        scenario(rm, device_id, key, cs, client, twin_of, device_of)
    except BaseException:
        print(f"    SDK wire trace:\n      {wire_trace()}", file=sys.stderr, flush=True)
        raise
    finally:
        within(10, "shutdown()", client.shutdown)


def scenario(rm, device_id, key, cs, client, twin_of, device_of):
    states = []  # client.connected at each connection state change
    patches = []
    client.on_connection_state_change = lambda: states.append(client.connected)
    client.on_twin_desired_properties_patch_received = patches.append

    step(f"connect over {TRANSPORT}")
    within(15, "connect()", client.connect)
    check(client.connected, "client.connected after connect()")
    check(WIRE and WIRE[0][2].startswith("CONNECT clean=0"), f"the SDK connects with clean session 0: {wire_trace()}")

    step("twin GET: desired and reported with $version, no $metadata, no tags")
    twin = within(10, "get_twin()", client.get_twin)
    info(repr(twin))
    check_eq(sorted(twin), ["desired", "reported"], "GET twin body keys")
    check_eq(twin["desired"], {"$version": 1}, "fresh desired")
    check_eq(twin["reported"], {"$version": 1}, "fresh reported")
    # With a patch handler set before connect(), the SDK GETs the twin itself
    # and hands the app the whole desired document as a first "patch".
    eventually("the synthesised patch with the desired document", lambda: patches)
    check_eq(patches[0], {"$version": 1}, "first patch handler call")

    step("presence while connected")
    connected = device_of()
    info(f"connection_state={connected.connection_state} last_activity_time={connected.last_activity_time}")
    check_eq(connected.connection_state, "Connected", "connectionState")
    last = connected.last_activity_time
    check(isinstance(last, datetime.datetime), f"last_activity_time must be a datetime, got {last!r}")
    age = abs((datetime.datetime.now(datetime.timezone.utc) - last).total_seconds())
    check(age < 60, f"last_activity_time must be recent, got {last} ({age:.1f} s away)")

    step("reported patch (nested): reported $version and twin version move, the twin etag does not")
    before = twin_of()
    within(10, "patch_twin_reported_properties", client.patch_twin_reported_properties, {"fw": "3.1", "radio": {"wifi": {"ssid": "lab", "rssi": -40}, "on": True}})
    after = twin_of()
    check_eq(user_props(after.properties.reported), {"fw": "3.1", "radio": {"wifi": {"ssid": "lab", "rssi": -40}, "on": True}}, "reported after the patch")
    check_eq(after.properties.reported["$version"], before.properties.reported["$version"] + 1, "reported $version + 1")
    check_eq(after.version, before.version + 1, "twin version + 1")
    check_eq(after.etag, before.etag, "twin etag after a reported patch (spec §7.4)")
    check_eq(after.properties.desired["$version"], before.properties.desired["$version"], "desired $version unchanged")
    within(10, "patch_twin_reported_properties", client.patch_twin_reported_properties, {"radio": {"wifi": None}})
    merged = twin_of()
    check_eq(user_props(merged.properties.reported), {"fw": "3.1", "radio": {"on": True}}, "None deletes in a reported patch")

    step("a bad reported patch is refused with ClientError and changes nothing")
    try:
        within(10, "patch_twin_reported_properties (bad)", client.patch_twin_reported_properties, {"bad.key": 1})
        raise CheckFailed("a reported patch with key 'bad.key' succeeded")
    except ClientError as err:
        info(f"bad patch -> {type(err).__name__}: {err} (cause: {type(err.__cause__).__name__}: {err.__cause__})")
        check("400" in str(err.__cause__), f"the SDK reports the hub's 400 status, got {err.__cause__!r}")
    unchanged = twin_of()
    check_eq(unchanged.properties.reported, merged.properties.reported, "reported after the refused patch")
    check_eq(unchanged.version, merged.version, "twin version after the refused patch")
    within(10, "patch_twin_reported_properties", client.patch_twin_reported_properties, {"afterBad": True})
    check_eq(twin_of().properties.reported.get("afterBad"), True, "the connection still works after the refused patch")

    step("desired notifications in $version order: patch, None delete, replace_twin, desired:null")
    within(10, "update_twin", rm.update_twin, device_id, Twin(properties=TwinProperties(desired={"x": 1, "y": {"z": 2}, "s": "keep"})), "*")
    within(10, "update_twin", rm.update_twin, device_id, Twin(properties=TwinProperties(desired={"x": None, "y": {"z": None, "n": 3}})), "*")
    within(10, "replace_twin", rm.replace_twin, device_id, Twin(properties=TwinProperties(desired={"w": 5, "y": {"q": 1}})))
    within(10, "PATCH desired:null", patch_twin_json, rm, device_id, {"properties": {"desired": None}})
    eventually("4 desired notifications", lambda: len(patches) >= 5)
    info(" ".join(repr(p) for p in patches[1:]))
    check_eq(patches[1:3], [
        {"x": 1, "y": {"z": 2}, "s": "keep", "$version": 2},
        {"x": None, "y": {"z": None, "n": 3}, "$version": 3},
    ], "patches arrive as sent, None included")
    # After a PUT the device gets the new document plus None for each key that
    # went away, nested ones included, so merging clients converge.
    check_eq(patches[3], {"w": 5, "y": {"q": 1, "n": None}, "s": None, "$version": 4}, "notification of replace_twin")
    check_eq(patches[4], {"w": None, "y": None, "$version": 5}, 'notification of {"properties":{"desired":null}}')
    check_eq([p["$version"] for p in patches], [1, 2, 3, 4, 5], "in $version order, none repeated")
    check_eq(states, [True], "connection state changes so far")

    step("a second raw MQTT connection with the same identity kicks the SDK; the SDK comes back without SUBSCRIBE")
    check(any(w.startswith("SUBSCRIBE $iothub/twin/PATCH/properties/desired/#") for _, _, w in WIRE), "the SDK subscribed to desired patches")
    check(any(w.startswith("SUBSCRIBE $iothub/twin/res/#") for _, _, w in WIRE), "the SDK subscribed to twin responses")
    mark = len(WIRE)
    connack = raw_connect(device_id, key)
    info(f"raw CONNACK rc={connack['rc']} session present={connack['present']}")
    check_eq(connack["rc"], 0, "the second connection is accepted")
    check_eq(connack["present"], 1, "clean=0 CONNACK reports the stored session (spec §2.3)")
    eventually("the SDK noticing the kick", lambda: False in states)
    eventually("the SDK reconnecting", lambda: states[-1] is True and client.connected, 20)
    eventually("Connected presence after the reconnect", lambda: device_of().connection_state == "Connected")
    within(10, "update_twin after the kick", rm.update_twin, device_id, Twin(properties=TwinProperties(desired={"after": "kick"})), "*")
    eventually("a desired patch after the reconnect", lambda: len(patches) >= 6)
    check_eq(patches[5:], [{"after": "kick", "$version": 6}], "desired patch after the reconnect")
    within(10, "patch_twin_reported_properties after the kick", client.patch_twin_reported_properties, {"afterKick": True})
    check_eq(twin_of().properties.reported.get("afterKick"), True, "twin responses still reach the SDK after the reconnect")
    since = WIRE[mark:]
    info(f"connection states: {states}; wire since the raw connect:\n      {wire_trace(mark)}")
    reconnects = [w for _, d, w in since if w.startswith("CONNECT")]
    check(reconnects, "the SDK sent a new CONNECT")
    check(all(w.startswith("CONNECT clean=0") for w in reconnects), f"the SDK reconnects with clean session 0: {reconnects}")
    check_eq([w for _, _, w in since if w.startswith("SUBSCRIBE")], [], "SUBSCRIBEs after the reconnect")

    step("disconnect: presence turns Disconnected")
    within(10, "disconnect()", client.disconnect)
    gone = eventually("Disconnected presence", lambda: (lambda d: d.connection_state == "Disconnected" and d)(device_of()))
    info(f"connection_state={gone.connection_state} last_activity_time={gone.last_activity_time}")

    step("refused: wrong key, disabled device, expired token")
    expect_refused("wrong key", new_client(with_wrong_key(cs), connection_retry=False))
    # The SDK itself refuses a token that has already expired, and takes no
    # SharedAccessSignature= connection string; so hand it a token that expires
    # between creating the client and connecting: the hub must refuse it.
    try:
        IoTHubDeviceClient.create_from_sastoken(sas_token(f"localhost/devices/{device_id}", key, int(time.time()) - 60), server_verification_cert=CA)
        raise CheckFailed("the SDK accepted an expired token")
    except ValueError as err:
        info(f"SDK refuses an expired token itself: {err}")
    expiring = sas_token(f"localhost/devices/{device_id}", key, int(time.time()) + 2)
    expired = IoTHubDeviceClient.create_from_sastoken(expiring, server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False)
    time.sleep(3.1)
    expect_refused("expired token", expired)
    current = device_of()
    disabled = within(10, "update_device_with_sas (disable)", rm.update_device_with_sas, device_id, current.etag, key, current.authentication.symmetric_key.secondary_key, "disabled")
    check_eq(disabled.status, "disabled", "status")
    check_eq(disabled.authentication.symmetric_key.primary_key, key, "the device kept its key")
    expect_refused("disabled device", new_client(cs, connection_retry=False))
    within(10, "delete_device", rm.delete_device, device_id)


def raw_connect(device_id, key):
    """Connects a plain paho client as the device (clean session 0) over
    MQTT/TLS, returns its CONNACK and disconnects. It is driven by hand, never
    by paho's loop thread, which would reconnect after the SDK takes the
    identity back."""
    connack = {}
    raw = paho.Client(client_id=device_id, clean_session=False, protocol=paho.MQTTv311)
    raw._twinhub_raw = True
    raw.username_pw_set(f"localhost/{device_id}/?api-version=2021-04-12", sas_token(f"localhost/devices/{device_id}", key, int(time.time()) + 3600))
    raw.tls_set_context(ssl.create_default_context(cadata=CA))
    raw.on_connect = lambda _c, _u, flags, rc: connack.update(rc=rc, present=flags.get("session present"))
    raw.connect("localhost", 8883, keepalive=60)
    try:
        deadline = time.time() + 10
        while "rc" not in connack:
            check(time.time() < deadline, "timed out after 10 s waiting for the raw client's CONNACK")
            rc = raw.loop(timeout=0.1)
            check(rc == paho.MQTT_ERR_SUCCESS or "rc" in connack, f"raw client loop failed before CONNACK: {paho.error_string(rc)}")
    finally:
        raw.disconnect()
        raw.loop(timeout=0.1)
    return connack


main(f"python/device.py ({TRANSPORT})", run)
