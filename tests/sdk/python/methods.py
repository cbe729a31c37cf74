"""Direct methods through the official Python SDKs: the service side with
azure-iot-hub `IoTHubRegistryManager.invoke_device_method`, the device side with
azure-iot-device `IoTHubDeviceClient.on_method_request_received` (which
subscribes at QoS 1 and answers at QoS 1), over MQTT/TLS or MQTT over
WebSockets (DEVICE_TRANSPORT=mqtt|ws). Fleet spec §1.

Covers: unknown device (404), offline device and connected device without a
handler (404 DeviceNotOnline), answers with the device's status and payload
(dict, string, None), a device status of 500 still being HTTP 200, a handler
that never answers (504 GatewayTimeout after the response timeout), bad
timeouts (400 ArgumentInvalid), the module form for a module that does not
exist (404 ModuleNotFound), and the Python default payload "" arriving as "".

Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX, DEVICE_TRANSPORT,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem (also the device's
     server_verification_cert)
"""

import threading
import time

from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod

import common
from common import check, check_eq, env, expect_http_error, info, main, step

common.SCRIPT_TIMEOUT_S = 80

TRANSPORT = env("DEVICE_TRANSPORT")
check(TRANSPORT in ("mqtt", "ws"), f"DEVICE_TRANSPORT must be mqtt or ws, got {TRANSPORT!r}")
PREFIX = env("TEST_PREFIX")
with open(env("REQUESTS_CA_BUNDLE")) as f:
    CA = f.read()


def method(name, payload=None, response_timeout=None, connect_timeout=None):
    kwargs = {"method_name": name}
    if payload is not None:
        kwargs["payload"] = payload
    if response_timeout is not None:
        kwargs["response_timeout_in_seconds"] = response_timeout
    if connect_timeout is not None:
        kwargs["connect_timeout_in_seconds"] = connect_timeout
    return CloudToDeviceMethod(**kwargs)


def body():
    registry = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    device_id = f"{PREFIX}m1"
    created = registry.create_device_with_sas(device_id, "", "", "enabled")
    key = created.authentication.symmetric_key.primary_key
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"

    step("unknown device: 404 DeviceNotFound")
    expect_http_error(
        "invoke on a missing device",
        lambda: registry.invoke_device_method(f"{PREFIX}ghost", method("reboot")),
        404,
        "DeviceNotFound",
    )
    step("registered but offline: 404 DeviceNotOnline")
    expect_http_error("invoke offline", lambda: registry.invoke_device_method(device_id, method("reboot")), 404, "DeviceNotOnline")

    device = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=CA, websockets=TRANSPORT == "ws", connection_retry=False
    )
    seen = []
    release_hang = threading.Event()

    def on_method(request):
        seen.append((request.name, request.payload))
        if request.name == "hang":
            release_hang.wait(20)
            return
        if request.name == "fail":
            answer = MethodResponse.create_from_method_request(request, 500, {"error": "boom"})
        elif request.name == "echo":
            answer = MethodResponse.create_from_method_request(request, 200, request.payload)
        else:
            answer = MethodResponse.create_from_method_request(request, 200, None)
        device.send_method_response(answer)

    try:
        step(f"connect over {TRANSPORT}, no handler: still DeviceNotOnline")
        device.connect()
        expect_http_error("invoke before a handler", lambda: registry.invoke_device_method(device_id, method("echo")), 404, "DeviceNotOnline")

        step("on_method_request_received: answers reach the caller")
        device.on_method_request_received = on_method
        # The connect timeout covers the moment until the SUBACK.
        result = registry.invoke_device_method(device_id, method("echo", {"a": [1, 2]}, 15, 10))
        info(f"status={result.status} payload={result.payload!r}")
        check_eq((result.status, result.payload), (200, {"a": [1, 2]}), "echo of a dict")
        result = registry.invoke_device_method(device_id, method("echo", "text", 15))
        check_eq((result.status, result.payload), (200, "text"), "echo of a string")
        # The SDK's default payload is "" (it replaces None), which travels as "".
        result = registry.invoke_device_method(device_id, CloudToDeviceMethod(method_name="echo", response_timeout_in_seconds=15))
        check_eq(result.payload, "", "the default payload")
        result = registry.invoke_device_method(device_id, method("none", None, 15))
        check_eq((result.status, result.payload), (200, None), "a None answer")

        step("a device status of 500 is HTTP 200 with status 500")
        result = registry.invoke_device_method(device_id, method("fail", None, 15))
        check_eq((result.status, result.payload), (500, {"error": "boom"}), "failed method")

        step("a handler that never answers: 504 GatewayTimeout")
        started = time.monotonic()
        expect_http_error("invoke hang", lambda: registry.invoke_device_method(device_id, method("hang", None, 5)), 504, "GatewayTimeout")
        waited = time.monotonic() - started
        check(4.5 <= waited < 15, f"504 after about 5 s, took {waited:.1f} s")
        release_hang.set()

        step("bad requests: 400 ArgumentInvalid; the module form: 404 ModuleNotFound")
        calls = len(seen)
        for bad in (method("echo", None, 4), method("echo", None, 301), method("echo", None, 30, 301), method("a b")):
            expect_http_error(f"invoke {bad.as_dict()}", lambda bad=bad: registry.invoke_device_method(device_id, bad), 400, "ArgumentInvalid")
        expect_http_error(
            "module method",
            lambda: registry.invoke_device_module_method(device_id, "nomodule", method("echo")),
            404,
            "ModuleNotFound",
        )
        check_eq(len(seen), calls, "calls that reached the device after refusals")
    finally:
        release_hang.set()
        device.shutdown()

    step("after shutdown: DeviceNotOnline again")
    expect_http_error("invoke after shutdown", lambda: registry.invoke_device_method(device_id, method("echo")), 404, "DeviceNotOnline")
    registry.delete_device(device_id)


main(f"python/methods.py ({TRANSPORT})", body)
