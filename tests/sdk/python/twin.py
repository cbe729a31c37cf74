"""Device twins through the official Python service SDK (azure-iot-hub
IoTHubRegistryManager): get_twin, update_twin (JSON merge patch, If-Match) --
including the common pattern of sending back a FETCHED twin object, whose
read-only members the hub must ignore -- and replace_twin.
Spec §5.3, §5.5, §6.2, §7.

Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem
"""

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin, TwinProperties

from common import (
    check,
    check_eq,
    check_metadata_node,
    env,
    etag_counter,
    expect_http_error,
    info,
    main,
    step,
    user_props,
)


def run():
    manager = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    prefix = env("TEST_PREFIX")
    device_id = f"{prefix}twin1"

    step(f"create {device_id}")
    device = manager.create_device_with_sas(device_id, None, None, "enabled")

    step("get the fresh twin")
    fresh = manager.get_twin(device_id)
    info(repr(fresh.as_dict()))
    check_eq(fresh.device_id, device_id, "twin deviceId")
    check_eq(fresh.etag, "AAAAAAAAAAE=", "fresh twin etag (spec §6.2, §7.3)")
    check_eq(fresh.version, 2, "fresh twin version (spec §7.3)")
    check_eq(fresh.device_etag, device.etag, "twin deviceEtag == device etag")
    check_eq(fresh.status, "enabled", "twin status")
    check_eq(fresh.authentication_type, "sas", "twin authenticationType")
    check(not fresh.tags, f"fresh twin has no tags, got {fresh.tags!r}")
    desired, reported = fresh.properties.desired, fresh.properties.reported
    check_eq(desired.get("$version"), 1, "fresh desired.$version")
    check_eq(reported.get("$version"), 1, "fresh reported.$version")
    check_eq(user_props(desired), {}, "fresh desired is empty")
    check_eq(user_props(reported), {}, "fresh reported is empty")
    check_metadata_node(desired.get("$metadata"), [], "fresh desired.$metadata")
    check_metadata_node(reported.get("$metadata"), [], "fresh reported.$metadata")
    etag, version = etag_counter(fresh.etag), fresh.version

    step("update_twin with a new Twin(tags, desired) and the twin etag")
    tags1 = {"env": "test", "loc": {"plant": "p1", "line": 1}}
    desired1 = {"telemetryInterval": 10, "nested": {"a": 1, "b": {"c": 2}}, "toDelete": "x", "list": [1, 2, 3]}
    t1 = manager.update_twin(device_id, Twin(tags=tags1, properties=TwinProperties(desired=desired1)), fresh.etag)
    info(repr(t1.as_dict()))
    check_eq(t1.tags, tags1, "tags after first patch")
    check_eq(user_props(t1.properties.desired), desired1, "desired after first patch")
    check_eq(t1.properties.desired["$version"], 2, "desired.$version +1")
    check_eq(t1.properties.reported["$version"], 1, "reported.$version unchanged by a service patch")
    check_eq(etag_counter(t1.etag), etag + 1, "etag +1")
    check_eq(t1.version, version + 1, "twin version +1")
    md1 = t1.properties.desired["$metadata"]
    check_metadata_node(md1, ["telemetryInterval", "nested", "toDelete", "list"], "desired.$metadata", 2)
    check_metadata_node(md1["nested"], ["a", "b"], "desired.$metadata.nested", 2)
    check_eq(md1.get("$lastUpdatedVersion"), 2, "desired root $lastUpdatedVersion")
    etag, version = etag + 1, version + 1

    step("update_twin with '*' (etag=None): nested merge and null deletes")
    patch2 = {"nested": {"b": {"d": 3}}, "toDelete": None, "absent": None, "added": True}
    t2 = manager.update_twin(device_id, Twin(properties=TwinProperties(desired=patch2)))
    check_eq(
        user_props(t2.properties.desired),
        {"telemetryInterval": 10, "nested": {"a": 1, "b": {"c": 2, "d": 3}}, "list": [1, 2, 3], "added": True},
        "desired after merge patch",
    )
    check_eq(t2.tags, tags1, "tags untouched by a desired-only patch")
    check_eq(t2.properties.desired["$version"], 3, "desired.$version +1")
    check_eq(etag_counter(t2.etag), etag + 1, "etag +1")
    check_eq(t2.version, version + 1, "twin version +1")
    md2 = t2.properties.desired["$metadata"]
    check("toDelete" not in md2, f"metadata of a deleted key must be removed: {md2!r}")
    check("absent" not in md2, f"deleting a missing key must not create metadata: {md2!r}")
    check_metadata_node(md2, ["added", "nested"], "desired.$metadata after merge", 3)
    check_metadata_node(md2, ["telemetryInterval"], "desired.$metadata (untouched key)", 2)
    check_metadata_node(md2["nested"]["b"], ["c"], "desired.$metadata.nested.b (untouched leaf)", 2)
    check_metadata_node(md2["nested"]["b"], ["d"], "desired.$metadata.nested.b (new leaf)", 3)
    etag, version = etag + 1, version + 1

    step("update_twin with a stale etag -> 412 PreconditionFailed")
    expect_http_error(
        "update_twin with stale etag",
        lambda: manager.update_twin(device_id, Twin(tags={"stale": True}), t1.etag),
        412,
        "PreconditionFailed",
    )
    after_stale = manager.get_twin(device_id)
    check_eq(after_stale.etag, t2.etag, "a rejected patch must not change the etag")
    check("stale" not in after_stale.tags, "a rejected patch must not be applied")

    step("update_twin(id, FETCHED twin, etag): read-only members are ignored (spec §5.5)")
    fetched = manager.get_twin(device_id)
    fetched.properties.desired["fromFetched"] = "yes"
    fetched.properties.reported["notAllowed"] = 1
    fetched.tags["env"] = "prod"
    t3 = manager.update_twin(device_id, fetched, fetched.etag)
    info(repr(t3.as_dict()))
    check_eq(t3.properties.desired.get("fromFetched"), "yes", "desired member of the fetched twin applied")
    check_eq(t3.tags.get("env"), "prod", "tag of the fetched twin applied")
    check_eq(t3.properties.desired["$version"], 4, "desired.$version computed by the hub")
    check("notAllowed" not in t3.properties.reported, "properties.reported in a service patch must be ignored")
    check_eq(t3.properties.reported["$version"], 1, "reported.$version unchanged")
    check_eq(etag_counter(t3.etag), etag + 1, "etag +1")
    check_eq(t3.version, version + 1, "twin version +1")
    check_eq(t3.device_etag, device.etag, "deviceEtag unchanged by a twin patch")
    check_metadata_node(t3.properties.desired["$metadata"], ["fromFetched"], "desired.$metadata", 4)
    etag, version = etag + 1, version + 1

    step("tags-only patch leaves desired.$version alone; nested tag delete")
    t4 = manager.update_twin(device_id, Twin(tags={"loc": {"line": None}}), t3.etag)
    check_eq(t4.tags, {"env": "prod", "loc": {"plant": "p1"}}, "tags after a nested tag delete")
    check_eq(t4.properties.desired["$version"], 4, "desired.$version unchanged by a tags-only patch (spec §3.3/§7.3)")
    check_eq(etag_counter(t4.etag), etag + 1, "etag +1 after a tags-only patch")
    etag, version = etag + 1, version + 1

    step("replace_twin with a stale etag -> 412 PreconditionFailed")
    expect_http_error(
        "replace_twin with stale etag",
        lambda: manager.replace_twin(device_id, Twin(tags={"x": 1}, properties=TwinProperties(desired={"x": 1})), t3.etag),
        412,
        "PreconditionFailed",
    )

    step("replace_twin with the current etag: tags and desired replaced exactly")
    t5 = manager.replace_twin(
        device_id,
        Twin(tags={"only": "this"}, properties=TwinProperties(desired={"z": 1, "obj": {"k": "v"}})),
        t4.etag,
    )
    info(repr(t5.as_dict()))
    check_eq(t5.tags, {"only": "this"}, "tags after replace")
    check_eq(user_props(t5.properties.desired), {"z": 1, "obj": {"k": "v"}}, "desired after replace")
    check_eq(t5.properties.desired["$version"], 5, "desired.$version +1 after replace")
    check_eq(etag_counter(t5.etag), etag + 1, "etag +1 after replace")
    check_eq(t5.version, version + 1, "twin version +1 after replace")
    md5 = t5.properties.desired["$metadata"]
    check("telemetryInterval" not in md5 and "nested" not in md5, f"metadata of replaced-away keys removed: {md5!r}")
    check_metadata_node(md5, ["z", "obj"], "desired.$metadata after replace", 5)
    check_eq(manager.get_twin(device_id).as_dict(), t5.as_dict(), "GET returns what replace returned")
    etag, version = etag + 1, version + 1

    step("replace_twin with '*' (etag=None)")
    t6 = manager.replace_twin(device_id, Twin(tags={}, properties=TwinProperties(desired={"w": 2})))
    check(not t6.tags, f"tags after replace with empty tags: {t6.tags!r}")
    check_eq(user_props(t6.properties.desired), {"w": 2}, "desired after second replace")
    check_eq(etag_counter(t6.etag), etag + 1, "etag +1")

    step("twin of an unknown device -> 404 DeviceNotFound")
    expect_http_error("get_twin unknown", lambda: manager.get_twin(f"{prefix}no-such-device"), 404, "DeviceNotFound")
    expect_http_error(
        "update_twin unknown",
        lambda: manager.update_twin(f"{prefix}no-such-device", Twin(tags={"a": 1})),
        404,
        "DeviceNotFound",
    )

    step(f"delete {device_id}; its twin is gone")
    manager.delete_device(device_id)
    expect_http_error("get_twin after delete", lambda: manager.get_twin(device_id), 404, "DeviceNotFound")


if __name__ == "__main__":
    main("python/twin.py", run)
