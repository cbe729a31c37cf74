"""The device side through the official Python device SDK (azure-iot-device;
transport from DEVICE_TRANSPORT: "mqtt" or "ws"): twin GET, reported patches,
desired notifications with None deletes, presence, surviving a server-side kick
without re-subscribing, and refused connections."""

import base64
import hashlib
import hmac
import ssl
import threading
import time
import urllib.parse

import paho.mqtt.client as paho
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device.exceptions import ClientError, CredentialError
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin, TwinProperties

from common import check, check_eq, env, info, main, step, with_wrong_key

PREFIX = env("TEST_PREFIX")
WEBSOCKETS = env("DEVICE_TRANSPORT") == "ws"
CA = open(env("REQUESTS_CA_BUNDLE")).read()


def eventually(what, condition, timeout=15.0):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sas_token(resource, key, expiry):
    sr = urllib.parse.quote(resource, safe="")
    signature = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(signature).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"


def connect(cs):
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False
    )
    client.connect()
    return client


def expect_refused(what, cs):
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False
    )
    try:
        client.connect()
    except (CredentialError, ClientError) as err:
        info(f"{what} -> {type(err).__name__}: {err}")
        return
    finally:
        client.shutdown()
    raise AssertionError(f"{what}: connect() succeeded")


def run():
    rm = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    device_id = f"{PREFIX}dev"
    device = rm.create_device_with_sas(device_id, None, None, "enabled")
    key = device.authentication.symmetric_key.primary_key
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"

    step(f"connect ({'websockets' if WEBSOCKETS else 'mqtt'})")
    patches = []
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA, websockets=WEBSOCKETS)
    client.on_twin_desired_properties_patch_received = patches.append
    client.connect()
    twin = client.get_twin()
    check_eq(twin["desired"]["$version"], 1, "desired $version")
    check_eq(twin["reported"]["$version"], 1, "reported $version")
    check("$metadata" not in twin["desired"], "devices never see $metadata")

    step("presence")
    check_eq(rm.get_device(device_id).connection_state, "Connected", "connectionState")

    step("reported patch: versions move, the twin etag does not")
    before = rm.get_twin(device_id)
    client.patch_twin_reported_properties({"fw": "3.0", "nested": {"b": 2}})
    after = rm.get_twin(device_id)
    check_eq(after.properties.reported["fw"], "3.0", "reported fw")
    check_eq(after.properties.reported["$version"], before.properties.reported["$version"] + 1, "reported $version")
    check_eq(after.etag, before.etag, "twin etag after a reported patch")
    try:
        client.patch_twin_reported_properties({"bad key": 1})
        raise AssertionError("an invalid reported patch succeeded")
    except ClientError as err:
        info(f"bad patch -> {type(err).__name__}: {err}")
    check_eq(rm.get_twin(device_id).properties.reported["$version"], after.properties.reported["$version"], "nothing changed")

    step("desired patches arrive in order, None deletes included")
    rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"x": 1, "y": {"z": 2}})), "*")
    rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"x": None})), "*")
    rm.replace_twin(device_id, Twin(properties=TwinProperties(desired={"w": 5})))
    # Python hands the app a synthesised patch holding the whole desired document
    # after its own twin GET on connect (version 1 here); the hub's patches follow.
    notified = lambda: [p for p in patches if p["$version"] > 1]
    eventually("three notifications", lambda: len(notified()) >= 3)
    check_eq(notified()[:3], [
        {"x": 1, "y": {"z": 2}, "$version": 2},
        {"x": None, "$version": 3},
        {"w": 5, "y": None, "$version": 4},
    ], "notifications")

    step("a second connection kicks the SDK's; the SDK reconnects and still gets patches")
    connack = {}
    done = threading.Event()
    raw = paho.Client(client_id=device_id, clean_session=False, protocol=paho.MQTTv311)
    raw.username_pw_set(f"localhost/{device_id}/?api-version=2021-04-12", sas_token(f"localhost/devices/{device_id}", key, int(time.time()) + 3600))
    context = ssl.create_default_context(cadata=CA)
    raw.tls_set_context(context)
    raw.on_connect = lambda c, u, flags, rc: (connack.update(rc=rc, present=flags.get("session present")), done.set())
    raw.connect("localhost", 8883)
    raw.loop_start()
    check(done.wait(10), "raw CONNACK")
    check_eq(connack["rc"], 0, "raw CONNACK code")
    check_eq(connack["present"], 1, "session present")
    raw.disconnect()
    raw.loop_stop()
    rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"after": "kick"})), "*")
    eventually("a patch after the reconnect", lambda: any(p.get("after") == "kick" for p in patches), 30)
    client.shutdown()

    step("refused: wrong key, expired token, disabled device")
    expect_refused("wrong key", with_wrong_key(cs))
    # The SDK refuses an already-expired token itself, so let one expire after
    # the client is created: the hub must refuse it.
    expiring = sas_token(f"localhost/devices/{device_id}", key, int(time.time()) + 2)
    client = IoTHubDeviceClient.create_from_sastoken(expiring, server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False)
    time.sleep(3)
    try:
        client.connect()
        raise AssertionError("expired token: connect() succeeded")
    except (CredentialError, ClientError) as err:
        info(f"expired token -> {type(err).__name__}: {err}")
    finally:
        client.shutdown()
    device = rm.get_device(device_id)
    rm.update_device_with_sas(device_id, device.etag, key, device.authentication.symmetric_key.secondary_key, "disabled")
    expect_refused("disabled device", cs)
    rm.delete_device(device_id)


main("device_twin.py", run)
