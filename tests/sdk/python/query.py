"""Twin queries through the official Python service SDK (azure-iot-hub
IoTHubRegistryManager.query_iot_hub), spec iothub-query.md §1-§4, §7.7-§7.8,
§9: 150 devices created in bulk, a region tag on 40 of them, then

- SELECT * paged with max_item_count=100, following continuation_token until
  None: exactly the expected ids, no duplicates, two pages, QueryResult.type
  "Twin", Twin rows with desired $version;
- a token that survives a change of page size, and one refused for another
  query;
- a projection (type "Raw"; rows arrive as Twin with the extra columns in
  additional_properties, undefined values left out);
- COUNT() and GROUP BY tags.region (rows as Twin.additional_properties);
- bad queries -> HttpOperationError 400 ArgumentInvalid.

The hub is shared with the other scripts, so every query is restricted to
this run's device-id prefix or its suite tag.

Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX,
     REQUESTS_CA_BUNDLE=<data-dir>/ca.pem
"""

import collections
import os

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import ExportImportDevice, QuerySpecification, Twin

from common import check, check_eq, env, expect_http_error, info, main, step

COUNT = 150
TAGGED = 40
REGIONS = ["EU", "US", "APAC"]
BULK_MAX = 100


def region_of(i):
    return REGIONS[i % len(REGIONS)]


def query(manager, text, token=None, max_item_count=None):
    return manager.query_iot_hub(QuerySpecification(query=text), token, max_item_count)


def query_all(manager, text, max_item_count, expected_type):
    """Every row of `text`, following continuation tokens; also the page sizes."""
    rows, sizes, token = [], [], None
    while True:
        result = query(manager, text, token, max_item_count)
        check_eq(result.type, expected_type, f"QueryResult.type (x-ms-item-type) of {text!r}")
        check(isinstance(result.items, list), f"items must be a list, got {result.items!r}")
        rows.extend(result.items)
        sizes.append(len(result.items))
        token = result.continuation_token
        if token is None:
            return rows, sizes
        check(token != "", "a continuation token must not be empty (spec §2)")
        check(len(sizes) < 20, f"the query must end: {text!r}")


def check_exact_ids(actual, expected, what):
    dupes = sorted(d for d, n in collections.Counter(actual).items() if n > 1)
    check_eq(dupes, [], f"{what}: ids returned more than once")
    check_eq(sorted(actual), sorted(expected), f"{what}: ids")


def run():
    manager = IoTHubRegistryManager.from_connection_string(env("IOTHUB_CONNECTION_STRING"))
    # A fresh suffix per run, so a leftover of an earlier run can never match.
    prefix = f"{env('TEST_PREFIX')}{os.urandom(3).hex()}-"
    ids = [f"{prefix}{i:03d}" for i in range(COUNT)]
    by_prefix = f"STARTSWITH(deviceId, '{prefix}')"
    by_suite = f"tags.suite = '{prefix}'"

    step(f"create {COUNT} devices in bulk, at most {BULK_MAX} per call")
    created = False
    try:
        for i in range(0, COUNT, BULK_MAX):
            batch = [ExportImportDevice(id=d, import_mode="create") for d in ids[i : i + BULK_MAX]]
            result = manager.bulk_create_or_update_devices(batch)
            created = True
            check(result.is_successful, f"bulk create: {result}")

        step(f"tag {TAGGED} of them with a region (update_twin)")
        for i in range(TAGGED):
            manager.update_twin(ids[i], Twin(tags={"suite": prefix, "region": region_of(i), "rank": i}), "*")

        step(f"SELECT * FROM devices WHERE {by_prefix}, max_item_count=100, continuation tokens until None")
        twins, sizes = query_all(manager, f"SELECT * FROM devices WHERE {by_prefix}", 100, "Twin")
        info(f"{len(twins)} twins in pages of {sizes}")
        check(len(sizes) > 1, f"more than one page expected, got {sizes}")
        # §3 [R]: pages are filled and the last one carries no token.
        check_eq(sizes, [100, 50], "page sizes")
        for twin in twins:
            check(isinstance(twin, Twin) and isinstance(twin.device_id, str), f"row is a Twin with a deviceId: {twin}")
            desired = twin.properties.desired
            check(isinstance(desired.get("$version"), int), f"{twin.device_id}: properties.desired.$version in {desired}")
            check("$metadata" in desired, f"{twin.device_id}: properties.desired.$metadata kept in rows (§10.6)")
            check(isinstance(twin.etag, str), f"{twin.device_id}: etag")
            i = ids.index(twin.device_id) if twin.device_id in ids else -1
            if 0 <= i < TAGGED:
                check_eq(twin.tags, {"suite": prefix, "region": region_of(i), "rank": i}, f"{twin.device_id}: tags")
        check_exact_ids([t.device_id for t in twins], ids, "SELECT * by prefix")

        step("a continuation token survives a change of max_item_count (§3)")
        text = f"SELECT * FROM devices WHERE {by_prefix}"
        first = query(manager, text, None, 30)
        check_eq(len(first.items), 30, "first page of 30")
        check(first.continuation_token, "a token after the first page")
        rest, rest_sizes = [], []
        token = first.continuation_token
        while token is not None:
            page = query(manager, text, token, 100)
            rest.extend(page.items)
            rest_sizes.append(len(page.items))
            token = page.continuation_token
            check(len(rest_sizes) < 10, "the query must end")
        check_eq(rest_sizes, [100, 20], "page sizes after the change")
        check_exact_ids([t.device_id for t in first.items + rest], ids, "pages of 30 then 100")

        step("a token presented with another query -> 400")
        expect_http_error(
            "token of another query",
            lambda: query(manager, f"SELECT deviceId FROM devices WHERE {by_prefix}", first.continuation_token, 100),
            400,
            "ArgumentInvalid",
        )

        step(f"SELECT * FROM devices WHERE {by_suite} AND tags.region = 'US', max_item_count=5")
        us = [d for i, d in enumerate(ids[:TAGGED]) if region_of(i) == "US"]
        twins, sizes = query_all(manager, f"SELECT * FROM devices WHERE {by_suite} AND tags.region = 'US'", 5, "Twin")
        info(f"{len(twins)} twins in pages of {sizes}")
        check(all(n <= 5 for n in sizes), f"pages hold at most 5 rows: {sizes}")
        check_exact_ids([t.device_id for t in twins], us, "SELECT * by tag")

        step(f"projection SELECT deviceId, tags.region FROM devices WHERE {by_prefix}")
        rows, sizes = query_all(manager, f"SELECT deviceId, tags.region FROM devices WHERE {by_prefix}", 100, "Raw")
        check_eq(sizes, [100, 50], "projection page sizes")
        check_exact_ids([r.device_id for r in rows], ids, "projection by prefix")
        for row in rows:
            # query_iot_hub turns every row into a Twin: deviceId is a Twin field,
            # `region` is not, so it lands in additional_properties (§9).
            check(isinstance(row, Twin), f"projected row is deserialized as a Twin: {row!r}")
            i = ids.index(row.device_id)
            expected = {"region": region_of(i)} if i < TAGGED else {}
            # §7.7: keys are the last path segment; an undefined value is left out.
            check_eq(row.additional_properties, expected, f"projected row of {row.device_id}")
            check(row.properties is None and row.tags is None, f"{row.device_id}: a projection row has no twin sections")

        step("COUNT() AS n (rows as Twin.additional_properties)")

        def count(where):
            result = query(manager, f"SELECT COUNT() AS n FROM devices WHERE {where}", None, 100)
            check_eq(result.type, "Raw", "QueryResult.type of an aggregate")
            check_eq(result.continuation_token, None, "one page for an aggregate")
            check_eq(len(result.items), 1, f"one aggregate row for {where!r}")
            row = result.items[0]
            check(isinstance(row, Twin) and row.device_id is None, f"aggregate row is an empty Twin: {row!r}")
            return row.additional_properties

        check_eq(count(by_prefix), {"n": COUNT}, "COUNT() by prefix")
        check_eq(count(by_suite), {"n": TAGGED}, "COUNT() by suite tag")
        check_eq(count(f"{by_suite} AND tags.rank < 10"), {"n": 10}, "COUNT() with a numeric tag condition")
        # §7.8: an aggregate without GROUP BY is one row, also over no twins.
        check_eq(count(f"{by_prefix} AND tags.region = 'Atlantis'"), {"n": 0}, "COUNT() over no twins")

        step("GROUP BY tags.region")
        rows, _ = query_all(
            manager,
            f"SELECT tags.region AS region, COUNT() AS n FROM devices WHERE {by_suite} GROUP BY tags.region",
            100,
            "Raw",
        )
        groups = [r.additional_properties for r in rows]
        info(f"{groups}")
        expected = collections.Counter(region_of(i) for i in range(TAGGED))
        check_eq(len(groups), len(REGIONS), f"one row per region: {groups}")
        check_eq({g["region"]: g["n"] for g in groups}, dict(expected), "counts per region")
        check(all(set(g) == {"region", "n"} for g in groups), f"group row keys: {groups}")

        step("bad queries -> HttpOperationError 400 ArgumentInvalid")
        for bad in [
            f"SELECT * FORM devices WHERE {by_prefix}",
            "SELECT * FROM devices WHERE",
            # §7.6: twin queries accept STARTSWITH but not the routing spelling.
            f"SELECT * FROM devices WHERE STARTS_WITH(deviceId, '{prefix}')",
        ]:
            expect_http_error(bad, lambda bad=bad: query(manager, bad, None, 10), 400, "ArgumentInvalid")
        expect_http_error("max_item_count=0", lambda: query(manager, f"SELECT * FROM devices WHERE {by_prefix}", None, 0), 400, "ArgumentInvalid")
    finally:
        if created:
            step("clean up: bulk delete, at most 100 per call")
            for i in range(0, COUNT, BULK_MAX):
                batch = [ExportImportDevice(id=d, import_mode="delete") for d in ids[i : i + BULK_MAX]]
                manager.bulk_create_or_update_devices(batch)
    left = query(manager, f"SELECT COUNT() AS n FROM devices WHERE {by_prefix}", None, 10)
    check_eq(left.items[0].additional_properties, {"n": 0}, "no device of this run is left")


main("python/query.py", run)
