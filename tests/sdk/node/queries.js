// Twin queries through the official Node service SDK (azure-iothub):
// createQuery(...).nextAsTwin over several pages, projections, aggregates,
// GROUP BY, and a bad query.
'use strict';

const { Registry } = require('azure-iothub');
const { assert, env, expectHttpError, info, main, step } = require('./lib/common');

const PREFIX = env('TEST_PREFIX');
const COUNT = 150;
const TAGGED = 40;

main('queries.js', async () => {
  const registry = Registry.fromConnectionString(env('IOTHUB_CONNECTION_STRING'));
  const ids = Array.from({ length: COUNT }, (_, i) => `${PREFIX}${String(i).padStart(3, '0')}`);

  step(`create ${COUNT} devices in bulk`);
  for (let i = 0; i < ids.length; i += 100) {
    const batch = ids.slice(i, i + 100).map((deviceId) => ({ deviceId }));
    await registry.addDevices(batch);
  }
  step(`tag ${TAGGED} of them`);
  for (let i = 0; i < TAGGED; i++) {
    await registry.updateTwin(ids[i], { tags: { suite: PREFIX, region: i % 2 ? 'EU' : 'US' } }, '*');
  }

  step('SELECT * over every page with nextAsTwin');
  const query = registry.createQuery(`SELECT * FROM devices WHERE STARTSWITH(deviceId, '${PREFIX}')`, 100);
  const seen = [];
  let pages = 0;
  while (query.hasMoreResults) {
    const { result } = await query.nextAsTwin();
    pages += 1;
    for (const twin of result) {
      assert.equal(typeof twin.deviceId, 'string', 'each row is a twin with a deviceId');
      assert.equal(typeof twin.properties.desired.$version, 'number', 'rows carry desired $version');
      seen.push(twin.deviceId);
    }
    assert.ok(pages < 10, 'the query must end (no empty x-ms-continuation)');
  }
  info(`${seen.length} twins in ${pages} pages`);
  assert.ok(pages >= 2, `more than one page expected, got ${pages}`);
  assert.deepEqual([...seen].sort(), ids, 'every device exactly once');

  step('projection with next()');
  const projection = registry.createQuery(`SELECT deviceId, tags.region FROM devices WHERE tags.suite = '${PREFIX}' AND tags.region = 'EU'`);
  const { result: rows } = await projection.next();
  assert.equal(projection.hasMoreResults, false);
  assert.equal(rows.length, TAGGED / 2);
  for (const row of rows) {
    assert.deepEqual(Object.keys(row).sort(), ['deviceId', 'region']);
    assert.equal(row.region, 'EU');
  }

  step('COUNT and GROUP BY');
  const { result: count } = await registry.createQuery(`SELECT COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, '${PREFIX}')`).next();
  assert.deepEqual(count, [{ n: COUNT }]);
  const { result: groups } = await registry
    .createQuery(`SELECT tags.region AS region, COUNT() AS n FROM devices WHERE tags.suite = '${PREFIX}' GROUP BY tags.region`)
    .next();
  const byRegion = Object.fromEntries(groups.map((g) => [g.region, g.n]));
  assert.deepEqual(byRegion, { US: TAGGED / 2, EU: TAGGED / 2 });

  step('a bad query is a 400 ArgumentError');
  await expectHttpError('SELECT * FORM devices', registry.createQuery('SELECT * FORM devices').next(), {
    status: 400,
    name: 'ArgumentError',
    code: 'ArgumentInvalid',
  });

  step('clean up');
  for (let i = 0; i < ids.length; i += 100) {
    await registry.removeDevices(ids.slice(i, i + 100).map((deviceId) => ({ deviceId })), true);
  }
});
