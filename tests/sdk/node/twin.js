// Device twins through the official Node service SDK: Registry.getTwin,
// Twin.update, Registry.updateTwin (JSON merge patch + If-Match), and the
// SDK's convenience-layer IoTHubRegistryManager.replaceTwin (PUT /twins/{id};
// the classic Registry of azure-iothub 1.16.6 has no replaceTwin).
// Spec §5.3, §5.5, §6.2, §7.
//
// Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX,
//      NODE_EXTRA_CA_CERTS=<data-dir>/ca.pem
'use strict';

const { Registry, IoTHubTokenCredentials } = require('azure-iothub');
const { IoTHubRegistryManager } = require('azure-iothub/dist/cl/iothub_registry_manager');
const {
  assert,
  assertMetadata,
  assertMetadataNode,
  env,
  etagCounter,
  expectHttpError,
  info,
  main,
  step,
  userProps,
} = require('./lib/common');

main('node/twin.js', async () => {
  const cs = env('IOTHUB_CONNECTION_STRING');
  const registry = Registry.fromConnectionString(cs);
  const prefix = env('TEST_PREFIX');
  const id = `${prefix}twin1`;

  step(`create ${id}`);
  const device = (await registry.create({ deviceId: id })).responseBody;

  step('get the fresh twin');
  const fresh = (await registry.getTwin(id)).responseBody;
  const freshJson = fresh.toJSON();
  info(JSON.stringify(freshJson));
  assert.equal(fresh.deviceId, id, 'twin deviceId');
  assert.equal(fresh.etag, 'AAAAAAAAAAE=', 'fresh twin etag (spec §6.2, §7.3)');
  assert.equal(fresh.version, 2, 'fresh twin version (spec §7.3)');
  assert.equal(fresh.deviceEtag, device.etag, 'twin deviceEtag == device etag');
  assert.equal(fresh.status, 'enabled', 'twin status');
  assert.equal(fresh.connectionState, 'Disconnected', 'twin connectionState');
  assert.equal(fresh.authenticationType, 'sas', 'twin authenticationType');
  assert.deepEqual(fresh.tags, {}, 'fresh twin has no tags');
  assert.equal(fresh.properties.desired.$version, 1, 'fresh desired.$version');
  assert.equal(fresh.properties.reported.$version, 1, 'fresh reported.$version');
  assert.deepEqual(userProps(fresh.properties.desired), {}, 'fresh desired is empty');
  assert.deepEqual(userProps(fresh.properties.reported), {}, 'fresh reported is empty');
  assertMetadata(fresh.properties.desired, [], { what: 'fresh desired' });
  assertMetadata(fresh.properties.reported, [], { what: 'fresh reported' });
  let etag = etagCounter(fresh.etag);
  let version = fresh.version;

  step('Twin.update(patch) with the twin etag: tags + desired');
  const patch1 = {
    tags: { env: 'test', loc: { plant: 'p1', line: 1 } },
    properties: { desired: { telemetryInterval: 10, nested: { a: 1, b: { c: 2 } }, toDelete: 'x', list: [1, 2, 3] } },
  };
  const updated1 = (await fresh.update(patch1)).result;
  assert.equal(etagCounter(updated1.etag), etag + 1n, 'etag +1 after a desired+tags patch');
  assert.deepEqual(updated1.tags, patch1.tags, 'tags after first patch');
  assert.deepEqual(userProps(updated1.properties.desired), patch1.properties.desired, 'desired after first patch');
  assert.equal(updated1.properties.desired.$version, 2, 'desired.$version +1');
  assert.equal(updated1.properties.reported.$version, 1, 'reported.$version unchanged by a service patch');
  assertMetadata(updated1.properties.desired, ['telemetryInterval', 'nested', 'toDelete', 'list'], {
    what: 'desired after first patch',
    desiredVersion: 2,
  });
  assertMetadataNode(updated1.properties.desired.$metadata.nested, ['a', 'b'], {
    what: 'desired.$metadata.nested',
    desiredVersion: 2,
  });
  assert.equal(updated1.properties.desired.$metadata.$lastUpdatedVersion, 2, 'desired root $lastUpdatedVersion');
  etag += 1n;
  const got1 = (await registry.getTwin(id)).responseBody;
  assert.equal(got1.version, version + 1, 'twin version +1 after a patch');
  assert.equal(got1.etag, updated1.etag, 'GET returns the etag of the last patch');
  version += 1;

  step('Registry.updateTwin(id, patch, etag): nested merge and null deletes');
  const patch2 = { properties: { desired: { nested: { b: { d: 3 } }, toDelete: null, absent: null, added: true } } };
  const res2 = await registry.updateTwin(id, patch2, updated1.etag);
  assert.equal(res2.httpResponse.statusCode, 200, 'PATCH /twins/{id} status');
  const t2 = res2.responseBody;
  info(JSON.stringify(t2.toJSON()));
  assert.deepEqual(
    userProps(t2.properties.desired),
    { telemetryInterval: 10, nested: { a: 1, b: { c: 2, d: 3 } }, list: [1, 2, 3], added: true },
    'desired after merge patch',
  );
  assert.deepEqual(t2.tags, patch1.tags, 'tags untouched by a desired-only patch');
  assert.equal(t2.properties.desired.$version, 3, 'desired.$version +1');
  assert.equal(etagCounter(t2.etag), etag + 1n, 'etag +1');
  assert.equal(t2.version, version + 1, 'twin version +1');
  etag += 1n;
  version += 1;
  const md2 = t2.properties.desired.$metadata;
  assert.ok(!('toDelete' in md2), `metadata of a deleted key must be removed: ${JSON.stringify(md2)}`);
  assert.ok(!('absent' in md2), `deleting a missing key must not create metadata: ${JSON.stringify(md2)}`);
  assertMetadata(t2.properties.desired, ['added', 'nested'], { what: 'desired after merge', desiredVersion: 3 });
  assertMetadataNode(md2.nested.b, ['c'], { what: 'desired.$metadata.nested.b (untouched leaf)', desiredVersion: 2 });
  assertMetadataNode(md2.nested.b, ['d'], { what: 'desired.$metadata.nested.b (new leaf)', desiredVersion: 3 });
  assertMetadataNode(md2, ['telemetryInterval'], { what: 'desired.$metadata (untouched key)', desiredVersion: 2 });

  step('stale etag -> 412 PreconditionFailed');
  await expectHttpError('updateTwin with a stale etag', registry.updateTwin(id, { tags: { stale: true } }, updated1.etag), {
    status: 412,
    name: 'InvalidEtagError',
    code: 'PreconditionFailed',
  });
  const afterStale = (await registry.getTwin(id)).responseBody;
  assert.equal(afterStale.etag, t2.etag, 'a rejected patch must not change the etag');
  assert.ok(!('stale' in afterStale.tags), 'a rejected patch must not be applied');

  step('Registry.updateTwin with "*": tags-only patch, nested tag delete');
  const t3 = (await registry.updateTwin(id, { tags: { env: 'prod', loc: { line: null } } }, '*')).responseBody;
  assert.deepEqual(t3.tags, { env: 'prod', loc: { plant: 'p1' } }, 'tags after a tags patch');
  assert.equal(etagCounter(t3.etag), etag + 1n, 'etag +1 after a tags-only patch');
  assert.equal(t3.properties.desired.$version, 3, 'desired.$version unchanged by a tags-only patch (spec §3.3/§7.3)');
  assert.equal(t3.version, version + 1, 'twin version +1 after a tags-only patch');
  etag += 1n;
  version += 1;

  step('read-only members and properties.reported in a service patch are ignored (spec §5.5)');
  const t4 = (
    await registry.updateTwin(
      id,
      {
        deviceId: id,
        etag: 'AAAAAAAAAAA=',
        version: 999,
        status: 'disabled',
        properties: { desired: { fromService: 1, $version: 77 }, reported: { fromService: 1 } },
      },
      t3.etag,
    )
  ).responseBody;
  assert.equal(t4.properties.desired.fromService, 1, 'desired member applied');
  assert.equal(t4.properties.desired.$version, 4, 'desired.$version is computed by the hub, not taken from the body');
  assert.ok(!('fromService' in t4.properties.reported), 'properties.reported in a service patch must be ignored');
  assert.equal(t4.properties.reported.$version, 1, 'reported.$version unchanged');
  assert.equal(t4.status, 'enabled', 'status in a twin patch must be ignored');
  assert.equal(etagCounter(t4.etag), etag + 1n, 'etag +1');
  assert.equal(t4.version, version + 1, 'twin version is computed by the hub');
  etag += 1n;
  version += 1;

  step('IoTHubRegistryManager.replaceTwin: tags and desired replaced exactly');
  const manager = new IoTHubRegistryManager(new IoTHubTokenCredentials(cs));
  const replaced = await manager.replaceTwin(id, { tags: { only: 'this' }, properties: { desired: { z: 1 } } });
  assert.equal(replaced._response.status, 200, 'PUT /twins/{id} status');
  const t5 = (await registry.getTwin(id)).responseBody;
  info(JSON.stringify(t5.toJSON()));
  assert.deepEqual(t5.tags, { only: 'this' }, 'tags after replace');
  assert.deepEqual(userProps(t5.properties.desired), { z: 1 }, 'desired after replace');
  assert.equal(t5.properties.desired.$version, 5, 'desired.$version +1 after replace');
  assert.equal(etagCounter(t5.etag), etag + 1n, 'etag +1 after replace');
  assert.equal(t5.version, version + 1, 'twin version +1 after replace');
  const md5 = t5.properties.desired.$metadata;
  assert.ok(!('telemetryInterval' in md5) && !('nested' in md5), `metadata of replaced-away keys removed: ${JSON.stringify(md5)}`);
  assertMetadata(t5.properties.desired, ['z'], { what: 'desired after replace', desiredVersion: 5 });

  await invalidPatches(registry, id);

  step('PATCH {"properties":{"desired":null}} clears desired (official Node tutorial, spec §5.5)');
  const before = (await registry.getTwin(id)).responseBody;
  const cleared = (await registry.updateTwin(id, { properties: { desired: null } }, before.etag)).responseBody;
  assert.deepEqual(userProps(cleared.properties.desired), {}, 'desired after desired:null');
  assert.equal(cleared.properties.desired.$version, before.properties.desired.$version + 1, 'desired.$version +1');
  assert.deepEqual(cleared.tags, before.tags, 'tags untouched by desired:null');
  assertMetadata(cleared.properties.desired, [], { what: 'desired after desired:null' });
  assert.deepEqual(
    Object.keys(cleared.properties.desired.$metadata).filter((k) => !k.startsWith('$')),
    [],
    'no metadata for cleared keys',
  );

  step('twin of an unknown device -> 404 DeviceNotFound');
  await expectHttpError('getTwin unknown', registry.getTwin(`${prefix}no-such-device`), {
    status: 404,
    name: 'DeviceNotFoundError',
    code: 'DeviceNotFound',
  });
  await expectHttpError('updateTwin unknown', registry.updateTwin(`${prefix}no-such-device`, { tags: { a: 1 } }, '*'), {
    status: 404,
    name: 'DeviceNotFoundError',
    code: 'DeviceNotFound',
  });

  step(`delete ${id}; its twin is gone`);
  await registry.delete(id);
  await expectHttpError('getTwin after delete', registry.getTwin(id), {
    status: 404,
    name: 'DeviceNotFoundError',
    code: 'DeviceNotFound',
  });
});

function nest(levels, leaf) {
  let value = leaf;
  for (let i = levels; i >= 1; i -= 1) value = { [`l${i}`]: value };
  return value;
}

// Key and value rules and size limits (spec §7.2): a violating patch is
// rejected with 400 and leaves the twin untouched; values at the limits pass.
async function invalidPatches(registry, id) {
  step('patches that break the key/value rules and size limits -> 400, twin unchanged');
  const start = (await registry.getTwin(id)).responseBody;
  const big = (n) => 'x'.repeat(n);
  const rejected = [
    ['desired key with "."', { properties: { desired: { 'a.b': 1 } } }, 'ArgumentInvalid'],
    ['desired key with a space', { properties: { desired: { 'a b': 1 } } }, 'ArgumentInvalid'],
    ['nested desired key with a control character', { properties: { desired: { ok: { 'x\u0001': 1 } } } }, 'ArgumentInvalid'],
    ['tag key with "."', { tags: { 'a.b': 1 } }, 'ArgumentInvalid'],
    ['null inside an array', { properties: { desired: { arr: [1, null] } } }, 'ArgumentInvalid'],
    ['integer above 2^52 - 1', { properties: { desired: { n: 4503599627370496 } } }, 'ArgumentInvalid'],
    ['11 nested objects (spec: at most 10 below the section root)', { properties: { desired: nest(12, 'v') } }, 'ArgumentInvalid'],
    ['a 5000-character string', { properties: { desired: { s: big(5000) } } }, undefined],
    ['tags over 8 KB', { tags: { t1: big(3000), t2: big(3000), t3: big(3000) } }, undefined],
    [
      'desired over 32 KB',
      { properties: { desired: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`d${i}`, big(3500)])) } },
      undefined,
    ],
  ];
  for (const [what, patch, code] of rejected) {
    await expectHttpError(what, registry.updateTwin(id, patch, '*'), { status: 400, name: 'ArgumentError', code });
  }
  const after = (await registry.getTwin(id)).responseBody;
  assert.equal(after.etag, start.etag, 'rejected patches must not change the etag');
  assert.equal(after.version, start.version, 'rejected patches must not change the version');
  assert.deepEqual(after.tags, start.tags, 'rejected patches must not change tags');
  assert.deepEqual(userProps(after.properties.desired), userProps(start.properties.desired), 'rejected patches must not change desired');

  step('values at the limits are accepted');
  const atLimits = {
    properties: {
      desired: {
        // The spec's own example: {"one":{...{"ten":{"property":"value"}}}}.
        ...nest(11, 'v'),
        maxInt: 4503599627370495,
        minInt: -4503599627370496,
        arr: [1, 'two', { three: 3 }, [4]],
        text: big(1000),
      },
    },
  };
  const accepted = (await registry.updateTwin(id, atLimits, '*')).responseBody;
  for (const [key, value] of Object.entries(atLimits.properties.desired)) {
    assert.deepEqual(accepted.properties.desired[key], value, `desired.${key} stored as sent`);
  }
}
