// Twin queries through the official Node service SDK (azure-iothub Registry),
// spec iothub-query.md §1-§4, §7.7-§7.8: 150 devices created in bulk, a region
// tag on 40 of them, then
//   - SELECT * paged by 100 with nextAsTwin while hasMoreResults: exactly the
//     expected ids, no duplicates, two HTTP calls (the first without a
//     continuation token, the second echoing the first answer's), Twin rows
//     with desired $version and $metadata, x-ms-item-type Twin;
//   - the same over a tag filter with small pages;
//   - a projection read with next() (item type Raw, flat rows, undefined
//     values left out of a row);
//   - COUNT() (also over no twins) and GROUP BY tags.region;
//   - bad queries -> 400 ArgumentError / ArgumentInvalid.
// The hub is shared with the other scripts, so every query is restricted to
// this run's device-id prefix or its suite tag.
//
// Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX,
//      NODE_EXTRA_CA_CERTS=<data-dir>/ca.pem
'use strict';

const crypto = require('node:crypto');
const { Registry, Twin } = require('azure-iothub');
const { assert, env, expectHttpError, info, main, step } = require('./lib/common');

const COUNT = 150;
const REGIONS = ['EU', 'US', 'APAC'];
const TAGGED = 40;
const BULK_MAX = 100;

main('node/query.js', async () => {
  const registry = Registry.fromConnectionString(env('IOTHUB_CONNECTION_STRING'));
  // A fresh suffix per run, so a leftover of an earlier run can never match.
  const prefix = `${env('TEST_PREFIX')}${crypto.randomBytes(3).toString('hex')}-`;
  const ids = Array.from({ length: COUNT }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`);
  const regionOf = (i) => REGIONS[i % REGIONS.length];
  const tagged = ids.slice(0, TAGGED);
  const byPrefix = `STARTSWITH(deviceId, '${prefix}')`;
  const bySuite = `tags.suite = '${prefix}'`;
  const calls = recordQueryCalls(registry);

  step(`create ${COUNT} devices with addDevices, at most ${BULK_MAX} per call`);
  let created = false;
  try {
    for (let i = 0; i < COUNT; i += BULK_MAX) {
      const batch = ids.slice(i, i + BULK_MAX).map((deviceId) => ({ deviceId }));
      const res = await registry.addDevices(batch);
      created = true;
      assert.equal(res.responseBody.isSuccessful, true, `bulk create: ${JSON.stringify(res.responseBody)}`);
    }

    step(`tag ${TAGGED} of them with a region (updateTwin)`);
    for (let i = 0; i < TAGGED; i++) {
      await registry.updateTwin(ids[i], { tags: { suite: prefix, region: regionOf(i), rank: i } }, '*');
    }

    step(`SELECT * FROM devices WHERE ${byPrefix}, pages of 100 with nextAsTwin`);
    calls.length = 0;
    const query = registry.createQuery(`SELECT * FROM devices WHERE ${byPrefix}`, 100);
    const seen = [];
    const pageSizes = [];
    while (query.hasMoreResults) {
      const { result, message } = await query.nextAsTwin();
      assert.equal(message.headers['x-ms-item-type'], 'Twin', 'x-ms-item-type of SELECT *');
      assert.ok(Array.isArray(result), `nextAsTwin must give an array, got ${JSON.stringify(result)}`);
      pageSizes.push(result.length);
      for (const twin of result) {
        assert.ok(twin instanceof Twin, 'each row is a Twin');
        assert.equal(typeof twin.deviceId, 'string', `row has a deviceId: ${JSON.stringify(twin)}`);
        assert.equal(typeof twin.properties.desired.$version, 'number', `${twin.deviceId}: properties.desired.$version`);
        assert.ok(twin.properties.desired.$metadata, `${twin.deviceId}: properties.desired.$metadata kept in rows (§10.6)`);
        assert.equal(typeof twin.properties.reported.$version, 'number', `${twin.deviceId}: properties.reported.$version`);
        assert.equal(typeof twin.etag, 'string', `${twin.deviceId}: etag`);
        seen.push(twin.deviceId);
        const i = ids.indexOf(twin.deviceId);
        if (i >= 0 && i < TAGGED) {
          assert.deepEqual(twin.tags, { suite: prefix, region: regionOf(i), rank: i }, `${twin.deviceId}: tags`);
        }
      }
      assert.ok(calls.length < 10, 'the query must end (no empty x-ms-continuation)');
    }
    info(`${seen.length} twins in pages of ${JSON.stringify(pageSizes)}, ${calls.length} HTTP calls`);
    assertExactIds(seen, ids, 'SELECT * by prefix');
    assert.ok(calls.length > 1, `more than one page expected, got ${calls.length} call(s)`);
    // §3 [R]: pages are filled and the last one carries no token, so no extra round trip.
    assert.deepEqual(pageSizes, [100, 50], 'page sizes');
    assert.equal(calls.length, 2, 'HTTP calls for 150 rows in pages of 100');
    assert.equal(calls[0].continuation, undefined, 'the first call sends no x-ms-continuation');
    assert.equal(typeof calls[1].continuation, 'string', 'the second call echoes the token');
    assert.ok(calls[1].continuation.length > 0, 'the token is not empty');
    assert.deepEqual(calls.map((c) => c.pageSize), [100, 100], 'x-ms-max-item-count sent');
    assert.equal(query.hasMoreResults, false, 'hasMoreResults after the last page');

    step(`SELECT * FROM devices WHERE ${bySuite} AND tags.region = 'EU', pages of 5`);
    const eu = tagged.filter((_, i) => regionOf(i) === 'EU');
    const euQuery = registry.createQuery(`SELECT * FROM devices WHERE ${bySuite} AND tags.region = 'EU'`, 5);
    const euSeen = [];
    let euPages = 0;
    while (euQuery.hasMoreResults) {
      const { result } = await euQuery.nextAsTwin();
      euPages += 1;
      assert.ok(result.length <= 5, `a page holds at most 5 rows, got ${result.length}`);
      euSeen.push(...result.map((t) => t.deviceId));
      assert.ok(euPages < 10, 'the query must end');
    }
    info(`${euSeen.length} twins in ${euPages} pages`);
    assertExactIds(euSeen, eu, 'SELECT * by tag');
    assert.equal(euPages, Math.ceil(eu.length / 5), 'pages for the tag query');

    step(`projection SELECT deviceId, tags.region FROM devices WHERE ${byPrefix}, with next()`);
    const projection = registry.createQuery(`SELECT deviceId, tags.region FROM devices WHERE ${byPrefix}`, 100);
    const rows = [];
    while (projection.hasMoreResults) {
      // Promise-style next() must be given the token: called without arguments it
      // sends none and restarts from the first page (azure-iothub 1.16 query.js;
      // nextAsTwin() falls back to query.continuationToken, next() does not).
      const { result, message } = await projection.next(projection.continuationToken);
      assert.equal(message.headers['x-ms-item-type'], 'Raw', 'x-ms-item-type of a projection');
      rows.push(...result);
      assert.ok(rows.length <= COUNT, 'the projection must end');
    }
    assertExactIds(rows.map((r) => r.deviceId), ids, 'projection by prefix');
    for (const row of rows) {
      assert.ok(!(row instanceof Twin), 'next() gives plain rows');
      const i = ids.indexOf(row.deviceId);
      const expected = i < TAGGED ? { deviceId: row.deviceId, region: regionOf(i) } : { deviceId: row.deviceId };
      // §7.7: keys are the last path segment; an undefined value is left out of the row.
      assert.deepEqual(row, expected, `projected row of ${row.deviceId}`);
    }

    step('a properties section projected whole keeps $metadata and $version (§7.7)');
    const { result: sections } = await registry
      .createQuery(`SELECT deviceId, properties.desired AS desired, properties.reported FROM devices WHERE deviceId = '${ids[0]}'`)
      .next();
    const { responseBody: twin0 } = await registry.getTwin(ids[0]);
    assert.deepEqual(
      sections,
      [{ deviceId: ids[0], desired: twin0.properties.desired, reported: twin0.properties.reported }],
      'projected sections equal the twin\'s',
    );
    assert.ok(sections[0].desired.$metadata, `desired.$metadata in ${JSON.stringify(sections)}`);

    step('COUNT() AS n');
    const count = async (where) => {
      const { result, message } = await registry.createQuery(`SELECT COUNT() AS n FROM devices WHERE ${where}`).next();
      assert.equal(message.headers['x-ms-item-type'], 'Raw', 'x-ms-item-type of an aggregate');
      assert.equal(message.headers['x-ms-continuation'], undefined, 'one page for an aggregate');
      return result;
    };
    assert.deepEqual(await count(byPrefix), [{ n: COUNT }], 'COUNT() by prefix');
    assert.deepEqual(await count(bySuite), [{ n: TAGGED }], 'COUNT() by suite tag');
    assert.deepEqual(await count(`${bySuite} AND tags.rank >= 30`), [{ n: TAGGED - 30 }], 'COUNT() with a numeric tag condition');
    // §7.8: an aggregate without GROUP BY is one row, also over no twins.
    assert.deepEqual(await count(`${byPrefix} AND tags.region = 'Atlantis'`), [{ n: 0 }], 'COUNT() over no twins');

    step('GROUP BY tags.region');
    const { result: groups, message: groupMessage } = await registry
      .createQuery(`SELECT tags.region AS region, COUNT() AS n FROM devices WHERE ${bySuite} GROUP BY tags.region`)
      .next();
    assert.equal(groupMessage.headers['x-ms-item-type'], 'Raw', 'x-ms-item-type of GROUP BY');
    info(JSON.stringify(groups));
    assert.equal(groups.length, REGIONS.length, `one row per region: ${JSON.stringify(groups)}`);
    const expectedGroups = {};
    for (let i = 0; i < TAGGED; i++) expectedGroups[regionOf(i)] = (expectedGroups[regionOf(i)] || 0) + 1;
    assert.deepEqual(Object.fromEntries(groups.map((g) => [g.region, g.n])), expectedGroups, 'counts per region');
    for (const g of groups) assert.deepEqual(Object.keys(g).sort(), ['n', 'region'], `group row keys: ${JSON.stringify(g)}`);

    step('invalid queries -> 400 ArgumentError (ArgumentInvalid)');
    for (const bad of [
      `SELECT * FORM devices WHERE ${byPrefix}`,
      `SELECT * FROM devices WHERE ${byPrefix} AND`,
      // §7.6: twin queries accept STARTSWITH but not the routing spelling.
      `SELECT * FROM devices WHERE STARTS_WITH(deviceId, '${prefix}')`,
    ]) {
      await expectHttpError(bad, registry.createQuery(bad).next(), {
        status: 400,
        name: 'ArgumentError',
        code: 'ArgumentInvalid',
      });
    }
  } finally {
    if (created) {
      step('clean up: removeDevices, at most 100 per call');
      for (let i = 0; i < COUNT; i += BULK_MAX) {
        await registry.removeDevices(ids.slice(i, i + BULK_MAX).map((deviceId) => ({ deviceId })), true);
      }
    }
  }
  const { result: left } = await registry.createQuery(`SELECT COUNT() AS n FROM devices WHERE ${byPrefix}`).next();
  assert.deepEqual(left, [{ n: 0 }], 'no device of this run is left');
});

// Records the x-ms-continuation and x-ms-max-item-count of every
// POST /devices/query the registry sends, by wrapping the SDK's REST client
// (its `executeApiCall(method, path, headers, ...)`), so the test sees what
// went on the wire and not only what the Query object says.
function recordQueryCalls(registry) {
  const calls = [];
  const client = registry._restApiClient;
  assert.equal(typeof client.executeApiCall, 'function', 'azure-iothub internals changed: Registry._restApiClient.executeApiCall');
  const original = client.executeApiCall;
  client.executeApiCall = function (method, path, headers, ...rest) {
    if (method === 'POST' && String(path).startsWith('/devices/query')) {
      calls.push({ continuation: headers['x-ms-continuation'], pageSize: headers['x-ms-max-item-count'] });
    }
    return original.call(this, method, path, headers, ...rest);
  };
  return calls;
}

function assertExactIds(actual, expected, what) {
  const dupes = actual.filter((id, i) => actual.indexOf(id) !== i);
  assert.deepEqual(dupes, [], `${what}: ids returned more than once`);
  assert.deepEqual([...actual].sort(), [...expected].sort(), `${what}: ids`);
}
