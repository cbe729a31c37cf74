"""Device identity registry through the official Python service SDK
(azure-iot-hub IoTHubRegistryManager): create/get/list/update/delete with
etags, bulk operations, statistics, and device ids that need percent-encoding
(spec §5.2, §5.3, §6.1).

Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem
"""

import base64

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import AuthenticationMechanism, ExportImportDevice, SymmetricKey, Twin

from common import (
    check,
    check_auto_generated_keys,
    check_eq,
    env,
    expect_http_error,
    info,
    main,
    step,
)


def statistics(manager):
    stats = manager.get_device_registry_statistics()
    counts = (stats.total_device_count, stats.enabled_device_count, stats.disabled_device_count)
    info(f"total={counts[0]} enabled={counts[1]} disabled={counts[2]}")
    for value in counts:
        check(isinstance(value, int) and value >= 0, f"statistics must be non-negative integers: {counts}")
    check_eq(counts[0], counts[1] + counts[2], "totalDeviceCount = enabled + disabled")
    return counts


def run():
    manager = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    prefix = env("TEST_PREFIX")
    device_id = f"{prefix}dev1"

    step("registry statistics (baseline)")
    total0, enabled0, disabled0 = statistics(manager)

    step(f"create_device_with_sas({device_id!r}, None, None, 'enabled')")
    created = manager.create_device_with_sas(device_id, None, None, "enabled")
    info(repr(created.as_dict()))
    check_eq(created.device_id, device_id, "created deviceId")
    check_eq(created.status, "enabled", "created status")
    check_eq(created.connection_state, "Disconnected", "created connectionState")
    check(isinstance(created.generation_id, str) and created.generation_id, "generationId present")
    check(isinstance(created.etag, str) and created.etag, "device etag present")
    check_eq(created.authentication.type, "sas", "authentication.type")
    check_auto_generated_keys(created, "created device")
    check_eq(created.cloud_to_device_message_count, 0, "cloudToDeviceMessageCount")
    primary = created.authentication.symmetric_key.primary_key
    secondary = created.authentication.symmetric_key.secondary_key

    step("create the same id again -> 409 DeviceAlreadyExists")
    expect_http_error(
        "duplicate create",
        lambda: manager.create_device_with_sas(device_id, None, None, "enabled"),
        409,
        "DeviceAlreadyExists",
    )

    step("get_device")
    got = manager.get_device(device_id)
    check_eq(got.device_id, device_id, "get deviceId")
    check_eq(got.generation_id, created.generation_id, "get generationId")
    check_eq(got.etag, created.etag, "get etag")
    check_eq(got.authentication.symmetric_key.primary_key, primary, "get primaryKey")
    check_eq(got.authentication.symmetric_key.secondary_key, secondary, "get secondaryKey")

    step("get_devices contains it; get_devices(1) returns one device")
    listed = manager.get_devices()
    check(device_id in [d.device_id for d in listed], f"get_devices must contain {device_id}")
    check_eq(len(manager.get_devices(1)), 1, "len(get_devices(max_number_of_devices=1)) (GET /devices?top=1)")

    step("statistics after create: total +1, enabled +1")
    check_eq(statistics(manager), (total0 + 1, enabled0 + 1, disabled0), "statistics after create")

    step("update_device_with_sas(etag='*') disables it")
    disabled = manager.update_device_with_sas(device_id, "*", primary, secondary, "disabled")
    check_eq(disabled.status, "disabled", "status after update")
    check_eq(disabled.generation_id, created.generation_id, "generationId unchanged by update")
    check(disabled.etag != created.etag, "device etag must change on update")
    check_eq(disabled.authentication.symmetric_key.primary_key, primary, "primaryKey unchanged by update")
    check_eq(manager.get_device(device_id).status, "disabled", "get after disable")
    twin = manager.get_twin(device_id)
    check_eq(twin.status, "disabled", "twin status after disable")
    check_eq(twin.device_etag, disabled.etag, "twin deviceEtag == device etag")

    step("statistics after disable: enabled -1, disabled +1")
    check_eq(statistics(manager), (total0 + 1, enabled0, disabled0 + 1), "statistics after disable")

    step("update_device_with_sas with a stale etag -> 412 PreconditionFailed")
    expect_http_error(
        "update with stale etag",
        lambda: manager.update_device_with_sas(device_id, created.etag, primary, secondary, "enabled"),
        412,
        "PreconditionFailed",
    )
    check_eq(manager.get_device(device_id).status, "disabled", "a rejected update must not be applied")

    step("update_device_with_sas with the current etag re-enables it")
    enabled = manager.update_device_with_sas(device_id, disabled.etag, primary, secondary, "enabled")
    check_eq(enabled.status, "enabled", "status after etag update")
    check(enabled.etag != disabled.etag, "device etag must change on update")

    step("update_device_with_sas of a missing device -> 404 DeviceNotFound (spec §5.2)")
    expect_http_error(
        "update missing device",
        lambda: manager.update_device_with_sas(f"{prefix}missing", "*", primary, secondary, "enabled"),
        404,
        "DeviceNotFound",
    )
    expect_http_error("get after the rejected update", lambda: manager.get_device(f"{prefix}missing"), 404, "DeviceNotFound")

    step("delete_device with a stale etag -> 412 PreconditionFailed")
    expect_http_error(
        "delete with stale etag",
        lambda: manager.delete_device(device_id, disabled.etag),
        412,
        "PreconditionFailed",
    )

    special_character_ids(manager, prefix)
    bulk(manager, prefix)
    explicit_keys_and_status(manager, prefix)

    step("get_service_statistics: no device is connected")
    check_eq(manager.get_service_statistics().connected_device_count, 0, "connectedDeviceCount")

    step("delete_device with the current etag; get -> 404, twin -> 404")
    manager.delete_device(device_id, enabled.etag)
    expect_http_error("get deleted device", lambda: manager.get_device(device_id), 404, "DeviceNotFound")
    expect_http_error("get twin of deleted device", lambda: manager.get_twin(device_id), 404, "DeviceNotFound")
    expect_http_error("delete deleted device", lambda: manager.delete_device(device_id), 404, "DeviceNotFound")
    check(device_id not in [d.device_id for d in manager.get_devices()], "get_devices must not contain the deleted device")

    step("statistics after cleanup equal the baseline")
    check_eq(statistics(manager), (total0, enabled0, disabled0), "statistics after cleanup")


def special_character_ids(manager, prefix):
    """msrest quotes path ids with quote(safe=''); the hub must decode each
    path segment exactly once."""
    device_id = f"{prefix}dev:1;a=b$c#d?e%f"
    step(f"create {device_id!r}")
    created = manager.create_device_with_sas(device_id, None, None, "enabled")
    check_eq(created.device_id, device_id, "created special deviceId")
    check_auto_generated_keys(created, "special device")
    check_eq(manager.get_device(device_id).device_id, device_id, "get special deviceId")
    twin = manager.get_twin(device_id)
    check_eq(twin.device_id, device_id, "twin deviceId of special device")
    patched = manager.update_twin(device_id, Twin(tags={"special": True}), twin.etag)
    check_eq(patched.tags, {"special": True}, "twin patch on special device")
    check(device_id in [d.device_id for d in manager.get_devices()], "get_devices contains the special id verbatim")
    expect_http_error(
        "get of an id that differs after '%'",
        lambda: manager.get_device(f"{prefix}dev:1;a=b$c#d?e%25f"),
        404,
        "DeviceNotFound",
    )
    step(f"delete {device_id!r}")
    manager.delete_device(device_id)
    expect_http_error("get deleted special device", lambda: manager.get_device(device_id), 404, "DeviceNotFound")


def explicit_keys_and_status(manager, prefix):
    """Keys given by the caller are stored as given; a device can be created
    disabled."""
    device_id = f"{prefix}explicit"
    primary = base64.b64encode(bytes(range(32))).decode()
    secondary = base64.b64encode(bytes(range(32, 64))).decode()
    step(f"create_device_with_sas({device_id!r}, <keys>, 'disabled')")
    before = statistics(manager)
    created = manager.create_device_with_sas(device_id, primary, secondary, "disabled")
    check_eq(created.status, "disabled", "status of a device created disabled")
    check_eq(created.authentication.symmetric_key.primary_key, primary, "explicit primaryKey")
    check_eq(created.authentication.symmetric_key.secondary_key, secondary, "explicit secondaryKey")
    check_eq(statistics(manager), (before[0] + 1, before[1], before[2] + 1), "statistics after creating a disabled device")
    step("rotate the keys with update_device_with_sas")
    updated = manager.update_device_with_sas(device_id, created.etag, secondary, primary, "disabled")
    check_eq(updated.authentication.symmetric_key.primary_key, secondary, "rotated primaryKey")
    check_eq(updated.authentication.symmetric_key.secondary_key, primary, "rotated secondaryKey")
    check_eq(manager.get_device(device_id).authentication.symmetric_key.primary_key, secondary, "rotated key persisted")
    manager.delete_device(device_id, updated.etag)


def export_import_device(device_id, mode):
    return ExportImportDevice(
        id=device_id,
        import_mode=mode,
        status="enabled",
        authentication=AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey()),
    )


def bulk(manager, prefix):
    b1, b2, b3 = f"{prefix}bulk1", f"{prefix}bulk2", f"{prefix}bulk3"

    step(f"bulk_create_or_update_devices create [{b1}, {b2}]")
    result = manager.bulk_create_or_update_devices([export_import_device(b1, "create"), export_import_device(b2, "create")])
    info(repr(result.as_dict()))
    check_eq(result.is_successful, True, "bulk create isSuccessful")
    check(not result.errors, f"bulk create errors: {result.errors!r}")
    for device_id in (b1, b2):
        device = manager.get_device(device_id)
        check_eq(device.status, "enabled", f"{device_id} status")
        check_auto_generated_keys(device, f"bulk-created {device_id}")

    step(f"bulk create [{b1} (duplicate), {b3}] -> per-item DeviceAlreadyExists error")
    result = manager.bulk_create_or_update_devices([export_import_device(b1, "create"), export_import_device(b3, "create")])
    info(repr(result.as_dict()))
    check_eq(result.is_successful, False, "bulk with duplicate isSuccessful")
    errors = {e.device_id: e for e in (result.errors or [])}
    check(b1 in errors, f"bulk with duplicate: an error for {b1}: {result.as_dict()!r}")
    check_eq(errors[b1].error_code, "DeviceAlreadyExists", "bulk duplicate errorCode")
    check(b3 not in errors, f"no error for {b3}: {result.as_dict()!r}")
    check_eq(manager.get_device(b3).device_id, b3, "the non-duplicate item of a partially failed bulk create is created")

    step("bulk with 101 devices -> 413 TooManyDevices, nothing created")
    too_many = [export_import_device(f"{prefix}many{i}", "create") for i in range(101)]
    expect_http_error("bulk of 101", lambda: manager.bulk_create_or_update_devices(too_many), 413, "TooManyDevices")
    expect_http_error("first of the 101", lambda: manager.get_device(f"{prefix}many0"), 404, "DeviceNotFound")

    step(f"bulk delete [{b1}, {b2}, {b3}]")
    result = manager.bulk_create_or_update_devices([export_import_device(d, "delete") for d in (b1, b2, b3)])
    info(repr(result.as_dict()))
    check_eq(result.is_successful, True, "bulk delete isSuccessful")
    for device_id in (b1, b2, b3):
        expect_http_error(f"get {device_id} after bulk delete", lambda d=device_id: manager.get_device(d), 404, "DeviceNotFound")


if __name__ == "__main__":
    main("python/registry.py", run)
