"""Shared access policies and SAS validation through the official Python
service SDK (spec §8.1, §8.3): each default policy may do exactly what its
permissions allow, and a bad key or an unknown policy is rejected with 401.

The Python SDK signs with `sig=quote(base64)`, which leaves '/' unencoded
(spec §8.1); about half of all signatures contain a '/', so the many requests
of these scripts (signed each second with a new expiry) exercise that form.

Env: IOTHUB_CONNECTION_STRING (iothubowner),
     IOTHUB_SERVICE_CONNECTION_STRING, IOTHUB_DEVICE_POLICY_CONNECTION_STRING,
     IOTHUB_REGISTRY_READ_CONNECTION_STRING,
     IOTHUB_REGISTRY_READ_WRITE_CONNECTION_STRING, TEST_PREFIX,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem
"""

import re

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin

from common import check, check_eq, env, expect_http_error, main, step, with_wrong_key

UNAUTHORIZED = (401, "IotHubUnauthorizedAccess")


def manager_for(variable):
    return IoTHubRegistryManager.from_connection_string(env(variable))


def run():
    owner_cs = env("IOTHUB_CONNECTION_STRING")
    owner = IoTHubRegistryManager.from_connection_string(owner_cs)
    prefix = env("TEST_PREFIX")
    device_id = f"{prefix}auth1"

    step(f"iothubowner creates {device_id}")
    owner.create_device_with_sas(device_id, None, None, "enabled")

    step("registryRead: list, get and statistics work; create, delete and twin reads are rejected")
    registry_read = manager_for("IOTHUB_REGISTRY_READ_CONNECTION_STRING")
    check(device_id in [d.device_id for d in registry_read.get_devices()], "registryRead get_devices contains the device")
    check_eq(registry_read.get_device(device_id).device_id, device_id, "registryRead get_device")
    registry_read.get_device_registry_statistics()
    expect_http_error(
        "registryRead create",
        lambda: registry_read.create_device_with_sas(f"{prefix}denied1", None, None, "enabled"),
        *UNAUTHORIZED,
    )
    expect_http_error("registryRead delete", lambda: registry_read.delete_device(device_id), *UNAUTHORIZED)
    expect_http_error("registryRead get_twin", lambda: registry_read.get_twin(device_id), *UNAUTHORIZED)

    step("service: twin read and update work; registry reads and writes are rejected")
    service = manager_for("IOTHUB_SERVICE_CONNECTION_STRING")
    twin = service.get_twin(device_id)
    check_eq(twin.device_id, device_id, "service get_twin")
    patched = service.update_twin(device_id, Twin(tags={"by": "service"}), twin.etag)
    check_eq(patched.tags, {"by": "service"}, "service update_twin")
    expect_http_error(
        "service create",
        lambda: service.create_device_with_sas(f"{prefix}denied2", None, None, "enabled"),
        *UNAUTHORIZED,
    )
    expect_http_error("service get_devices", lambda: service.get_devices(), *UNAUTHORIZED)
    expect_http_error("service get_device", lambda: service.get_device(device_id), *UNAUTHORIZED)

    step("registryReadWrite: create and delete work; twin reads are rejected")
    registry_read_write = manager_for("IOTHUB_REGISTRY_READ_WRITE_CONNECTION_STRING")
    rw_id = f"{prefix}rw1"
    created = registry_read_write.create_device_with_sas(rw_id, None, None, "enabled")
    check_eq(created.device_id, rw_id, "registryReadWrite create")
    expect_http_error("registryReadWrite get_twin", lambda: registry_read_write.get_twin(rw_id), *UNAUTHORIZED)
    registry_read_write.delete_device(rw_id)

    step("device policy: registry and twin operations are rejected")
    device_policy = manager_for("IOTHUB_DEVICE_POLICY_CONNECTION_STRING")
    expect_http_error("device policy get_devices", lambda: device_policy.get_devices(), *UNAUTHORIZED)
    expect_http_error("device policy get_twin", lambda: device_policy.get_twin(device_id), *UNAUTHORIZED)

    step("wrong key -> 401")
    wrong_key = IoTHubRegistryManager.from_connection_string(with_wrong_key(owner_cs))
    expect_http_error("wrong key get_devices", lambda: wrong_key.get_devices(), *UNAUTHORIZED)
    expect_http_error("wrong key get_device", lambda: wrong_key.get_device(device_id), *UNAUTHORIZED)
    expect_http_error(
        "wrong key create",
        lambda: wrong_key.create_device_with_sas(f"{prefix}denied3", None, None, "enabled"),
        *UNAUTHORIZED,
    )

    step("unknown policy name -> 401")
    unknown_cs, count = re.subn(r"SharedAccessKeyName=[^;]*", "SharedAccessKeyName=nosuchpolicy", owner_cs)
    check(count == 1, "connection string must contain SharedAccessKeyName=")
    unknown = IoTHubRegistryManager.from_connection_string(unknown_cs)
    expect_http_error("unknown policy get_devices", lambda: unknown.get_devices(), *UNAUTHORIZED)

    step("none of the rejected creates happened")
    for denied in ("denied1", "denied2", "denied3"):
        expect_http_error(
            f"get {prefix}{denied}", lambda d=denied: owner.get_device(f"{prefix}{d}"), 404, "DeviceNotFound"
        )

    step(f"cleanup: delete {device_id}")
    owner.delete_device(device_id)


if __name__ == "__main__":
    main("python/auth.py", run)
