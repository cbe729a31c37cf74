// Shared access policies and SAS validation through the official Node service
// SDK (spec §8.1, §8.3): each default policy may do exactly what its
// permissions allow, and a bad key or an expired token is rejected with 401.
//
// Env: IOTHUB_CONNECTION_STRING (iothubowner),
//      IOTHUB_SERVICE_CONNECTION_STRING, IOTHUB_DEVICE_POLICY_CONNECTION_STRING,
//      IOTHUB_REGISTRY_READ_CONNECTION_STRING,
//      IOTHUB_REGISTRY_READ_WRITE_CONNECTION_STRING, TEST_PREFIX,
//      NODE_EXTRA_CA_CERTS=<data-dir>/ca.pem
'use strict';

const { ConnectionString, Registry, SharedAccessSignature } = require('azure-iothub');
const { assert, env, expectHttpError, main, step, withWrongKey } = require('./lib/common');

const UNAUTHORIZED = { status: 401, name: 'UnauthorizedError', code: 'IotHubUnauthorizedAccess' };

main('node/auth.js', async () => {
  const ownerCs = env('IOTHUB_CONNECTION_STRING');
  const owner = Registry.fromConnectionString(ownerCs);
  const prefix = env('TEST_PREFIX');
  const id = `${prefix}auth1`;

  step(`iothubowner creates ${id}`);
  await owner.create({ deviceId: id });

  step('registryRead: list and get work; create, delete and twin reads are rejected');
  const registryRead = Registry.fromConnectionString(env('IOTHUB_REGISTRY_READ_CONNECTION_STRING'));
  const listed = (await registryRead.list()).responseBody;
  assert.ok(listed.some((d) => d.deviceId === id), 'registryRead list contains the device');
  assert.equal((await registryRead.get(id)).responseBody.deviceId, id, 'registryRead get');
  await registryRead.getRegistryStatistics();
  await expectHttpError('registryRead create', registryRead.create({ deviceId: `${prefix}denied1` }), UNAUTHORIZED);
  await expectHttpError('registryRead delete', registryRead.delete(id), UNAUTHORIZED);
  await expectHttpError('registryRead getTwin', registryRead.getTwin(id), UNAUTHORIZED);

  step('service: twin read and update work; registry reads and writes are rejected');
  const service = Registry.fromConnectionString(env('IOTHUB_SERVICE_CONNECTION_STRING'));
  const twin = (await service.getTwin(id)).responseBody;
  assert.equal(twin.deviceId, id, 'service getTwin');
  const patched = (await service.updateTwin(id, { tags: { by: 'service' } }, twin.etag)).responseBody;
  assert.equal(patched.tags.by, 'service', 'service updateTwin');
  await expectHttpError('service create', service.create({ deviceId: `${prefix}denied2` }), UNAUTHORIZED);
  await expectHttpError('service list', service.list(), UNAUTHORIZED);
  await expectHttpError('service get', service.get(id), UNAUTHORIZED);

  step('registryReadWrite: create and delete work; twin reads are rejected');
  const registryReadWrite = Registry.fromConnectionString(env('IOTHUB_REGISTRY_READ_WRITE_CONNECTION_STRING'));
  const rwId = `${prefix}rw1`;
  const created = (await registryReadWrite.create({ deviceId: rwId })).responseBody;
  assert.equal(created.deviceId, rwId, 'registryReadWrite create');
  await expectHttpError('registryReadWrite getTwin', registryReadWrite.getTwin(rwId), UNAUTHORIZED);
  await registryReadWrite.delete(rwId);

  step('device policy: registry and twin operations are rejected');
  const devicePolicy = Registry.fromConnectionString(env('IOTHUB_DEVICE_POLICY_CONNECTION_STRING'));
  await expectHttpError('device policy list', devicePolicy.list(), UNAUTHORIZED);
  await expectHttpError('device policy getTwin', devicePolicy.getTwin(id), UNAUTHORIZED);

  step('wrong key -> 401');
  const wrongKey = Registry.fromConnectionString(withWrongKey(ownerCs));
  await expectHttpError('wrong key list', wrongKey.list(), UNAUTHORIZED);
  await expectHttpError('wrong key get', wrongKey.get(id), UNAUTHORIZED);
  await expectHttpError('wrong key create', wrongKey.create({ deviceId: `${prefix}denied3` }), UNAUTHORIZED);

  step('unknown policy name -> 401');
  const unknownPolicy = Registry.fromConnectionString(ownerCs.replace(/SharedAccessKeyName=[^;]*/, 'SharedAccessKeyName=nosuchpolicy'));
  await expectHttpError('unknown policy list', unknownPolicy.list(), UNAUTHORIZED);

  step('expired token (valid signature) -> 401; the same token shape with a future expiry works');
  const cn = ConnectionString.parse(ownerCs);
  const now = Math.floor(Date.now() / 1000);
  const expired = SharedAccessSignature.create(cn.HostName, cn.SharedAccessKeyName, cn.SharedAccessKey, now - 3600);
  await expectHttpError('expired token list', Registry.fromSharedAccessSignature(expired.toString()).list(), UNAUTHORIZED);
  const valid = SharedAccessSignature.create(cn.HostName, cn.SharedAccessKeyName, cn.SharedAccessKey, now + 600);
  await Registry.fromSharedAccessSignature(valid.toString()).list();

  step('none of the rejected creates happened');
  for (const denied of ['denied1', 'denied2', 'denied3']) {
    await expectHttpError(`get ${prefix}${denied}`, owner.get(`${prefix}${denied}`), {
      status: 404,
      name: 'DeviceNotFoundError',
      code: 'DeviceNotFound',
    });
  }

  step(`cleanup: delete ${id}`);
  await owner.delete(id);
});
