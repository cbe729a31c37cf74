"""Twin queries through the official Python service SDK (azure-iot-hub):
query_iot_hub with max_item_count and continuation tokens, projections,
aggregates and a bad query."""

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import ExportImportDevice, QuerySpecification, Twin

from common import check, check_eq, env, expect_http_error, info, main, step

PREFIX = env("TEST_PREFIX")
COUNT = 150
TAGGED = 30


def run():
    rm = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    ids = [f"{PREFIX}{i:03d}" for i in range(COUNT)]

    step(f"create {COUNT} devices in bulk")
    for i in range(0, COUNT, 100):
        batch = [ExportImportDevice(id=d, import_mode="create") for d in ids[i : i + 100]]
        result = rm.bulk_create_or_update_devices(batch)
        check(result.is_successful, f"bulk create: {result}")
    step(f"tag {TAGGED} of them")
    for d in ids[:TAGGED]:
        rm.update_twin(d, Twin(tags={"suite": PREFIX, "tier": "gold"}), "*")

    step("SELECT * paged with max_item_count=100 and continuation tokens")
    spec = QuerySpecification(query=f"SELECT * FROM devices WHERE STARTSWITH(deviceId, '{PREFIX}')")
    seen, token, pages = [], None, 0
    while True:
        result = rm.query_iot_hub(spec, token, 100)
        pages += 1
        check_eq(result.type, "Twin", "x-ms-item-type")
        for twin in result.items:
            check(isinstance(twin, Twin) and twin.device_id, f"row is a twin: {twin}")
            seen.append(twin.device_id)
        token = result.continuation_token
        if token is None:
            break
        check(pages < 10, "the query must end")
    info(f"{len(seen)} twins in {pages} pages")
    check(pages >= 2, f"more than one page expected, got {pages}")
    check_eq(sorted(seen), ids, "every device exactly once")

    step("projection and COUNT")
    result = rm.query_iot_hub(QuerySpecification(query=f"SELECT deviceId FROM devices WHERE tags.suite = '{PREFIX}'"), None, 100)
    check_eq(result.type, "Raw", "x-ms-item-type of a projection")
    check_eq(sorted(r.device_id for r in result.items), ids[:TAGGED], "projected ids")
    result = rm.query_iot_hub(QuerySpecification(query=f"SELECT COUNT() AS n FROM devices WHERE tags.tier = 'gold' AND tags.suite = '{PREFIX}'"), None, 100)
    check_eq(len(result.items), 1, "one aggregate row")
    check_eq(result.items[0].additional_properties, {"n": TAGGED}, "COUNT() row")

    step("a bad query is a 400")
    expect_http_error("bad query", lambda: rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE"), None, 10), 400, "ArgumentInvalid")

    step("clean up")
    for i in range(0, COUNT, 100):
        batch = [ExportImportDevice(id=d, import_mode="delete") for d in ids[i : i + 100]]
        rm.bulk_create_or_update_devices(batch)


main("queries.py", run)
