"""Module identities and module twins through the official Python SDKs: the
registry side with azure-iot-hub `IoTHubRegistryManager` (create_module_with_sas,
get_module, get_modules, update_module_with_sas, delete_module, get_module_twin,
update_module_twin, replace_module_twin, invoke_device_module_method) and the
module side with azure-iot-device `IoTHubModuleClient` over MQTT/TLS or MQTT over
WebSockets (DEVICE_TRANSPORT=mqtt|ws). Fleet spec §2.

Covers: create (201/200 with generated keys, etag MQ==), update with the etag,
module twins isolated from the device's, desired patches delivered to the module
client only, reported patches from the module, a method handler on the module,
the device key refused for the module, and delete (204).

Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX, DEVICE_TRANSPORT,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem
"""

import threading
import time

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, MethodResponse
from azure.iot.device.exceptions import ClientError, CredentialError
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

import common
from common import check, check_eq, env, expect_http_error, info, main, step, user_props

common.SCRIPT_TIMEOUT_S = 80

TRANSPORT = env("DEVICE_TRANSPORT")
check(TRANSPORT in ("mqtt", "ws"), f"DEVICE_TRANSPORT must be mqtt or ws, got {TRANSPORT!r}")
WEBSOCKETS = TRANSPORT == "ws"
PREFIX = env("TEST_PREFIX")
with open(env("REQUESTS_CA_BUNDLE")) as f:
    CA = f.read()


def wait_for(what, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise common.CheckFailed(f"timed out waiting for {what}")


def body():
    registry = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    device_id = f"{PREFIX}d1"
    device = registry.create_device_with_sas(device_id, "", "", "enabled")
    device_key = device.authentication.symmetric_key.primary_key

    step("create_module_with_sas: generated keys, etag MQ==")
    created = registry.create_module_with_sas(device_id, "m1", None, None, None)
    check_eq(created.module_id, "m1", "moduleId")
    check_eq(created.etag, "MQ==", "etag on create")
    key = created.authentication.symmetric_key.primary_key
    check(isinstance(key, str) and len(key) == 44, f"generated key {key!r}")
    registry.create_module_with_sas(device_id, "m2", None, None, None)
    expect_http_error("create m1 again", lambda: registry.create_module_with_sas(device_id, "m1", None, None, None), 409, "ModuleAlreadyExistsOnDevice")
    check_eq(sorted(m.module_id for m in registry.get_modules(device_id)), ["m1", "m2"], "get_modules")

    step("update_module_with_sas with the etag")
    updated = registry.update_module_with_sas(device_id, "m1", "me", created.etag, key, created.authentication.symmetric_key.secondary_key)
    check_eq(updated.managed_by, "me", "managedBy")
    check(updated.etag != created.etag, "etag moves on update")
    expect_http_error("stale etag", lambda: registry.update_module_with_sas(device_id, "m1", "x", created.etag, key, key), 412, "PreconditionFailed")

    step(f"module client over {TRANSPORT}: the device key is refused")
    impostor = IoTHubModuleClient.create_from_connection_string(
        f"HostName=localhost;DeviceId={device_id};ModuleId=m1;SharedAccessKey={device_key}",
        server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False,
    )
    try:
        impostor.connect()
        raise common.CheckFailed("a module connected with its device's key")
    except (ClientError, CredentialError) as err:
        info(f"device key for m1 -> {type(err).__name__}")
    finally:
        impostor.shutdown()

    module = IoTHubModuleClient.create_from_connection_string(
        f"HostName=localhost;DeviceId={device_id};ModuleId=m1;SharedAccessKey={key}",
        server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False,
    )
    device_client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName=localhost;DeviceId={device_id};SharedAccessKey={device_key}",
        server_verification_cert=CA, websockets=WEBSOCKETS, connection_retry=False,
    )
    module_patches, device_patches = [], []
    lock = threading.Lock()

    def on_method(request):
        module.send_method_response(MethodResponse.create_from_method_request(request, 200, {"module": "m1", "got": request.payload}))

    try:
        module.connect()
        device_client.connect()
        module.on_twin_desired_properties_patch_received = lambda p: module_patches.append(p)
        device_client.on_twin_desired_properties_patch_received = lambda p: device_patches.append(p)
        module.on_method_request_received = on_method
        twin = module.get_twin()
        check_eq(twin, {"desired": {"$version": 1}, "reported": {"$version": 1}}, "fresh module twin from the module")

        step("module twin: service patch reaches the module only")
        service_twin = registry.get_module_twin(device_id, "m1")
        check_eq(service_twin.module_id, "m1", "moduleId in the module twin")
        check_eq(service_twin.etag, "AAAAAAAAAAE=", "fresh module twin etag")
        patch = Twin(tags={"zone": "a"}, properties=TwinProperties(desired={"rate": 3}))
        # The patch may race the SUBSCRIBE the handler setter sends; retry the wait only.
        registry.update_module_twin(device_id, "m1", patch, service_twin.etag)
        wait_for("module desired patch", lambda: any(p.get("rate") == 3 for p in module_patches))
        time.sleep(0.3)
        check_eq(device_patches, [], "device got its module's desired patch")
        device_twin = registry.get_twin(device_id)
        check(device_twin.tags in (None, {}), f"device tags {device_twin.tags!r}")

        step("the module reports")
        module.patch_twin_reported_properties({"state": "ok", "n": 2})
        reported = registry.get_module_twin(device_id, "m1")
        check_eq(user_props(reported.properties.reported), {"state": "ok", "n": 2}, "module reported")
        check_eq(user_props(registry.get_twin(device_id).properties.reported), {}, "device reported untouched")
        replaced = registry.replace_module_twin(device_id, "m1", Twin(properties=TwinProperties(desired={"only": 1})))
        check_eq(user_props(replaced.properties.desired), {"only": 1}, "replace module twin")

        step("direct method to the module")
        result = registry.invoke_device_module_method(
            device_id, "m1", CloudToDeviceMethod(method_name="hello", payload={"x": 1}, response_timeout_in_seconds=10, connect_timeout_in_seconds=10)
        )
        check_eq((result.status, result.payload), (200, {"module": "m1", "got": {"x": 1}}), "module method answer")
        expect_http_error(
            "method to m2 (offline)",
            lambda: registry.invoke_device_module_method(device_id, "m2", CloudToDeviceMethod(method_name="hello")),
            404,
            "DeviceNotOnline",
        )
    finally:
        module.shutdown()
        device_client.shutdown()

    step("delete_module and then the device")
    registry.delete_module(device_id, "m2")
    expect_http_error("get deleted m2", lambda: registry.get_module(device_id, "m2"), 404, "ModuleNotFound")
    registry.delete_device(device_id)
    expect_http_error("modules of a deleted device", lambda: registry.get_modules(device_id), 404, "DeviceNotFound")


main(f"python/modules.py ({TRANSPORT})", body)
