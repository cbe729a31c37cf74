// Module identities and module twins through the official Node SDKs: the
// registry side with azure-iothub `Registry` (addModule, getModule,
// getModulesOnDevice, updateModule, removeModule, getModuleTwin,
// updateModuleTwin, `devices.modules` queries) and the module side with
// azure-iot-device `ModuleClient` over `Mqtt` or `MqttWs` (DEVICE_TRANSPORT).
// Fleet spec §2.
//
// Covers: keys generated on create, etags (MQ== on create, moving on update),
// 409 on a second create, a key swap through updateModule honoured, module twins
// isolated from the device twin and from each other (a desired patch reaches
// only its module's ModuleClient), reported patches from the module, direct
// methods to a module (`invokeDeviceMethod(d, m, params)`), a device key that
// cannot open a module, queries over devices.modules, and deleting a module and
// then its device.
//
// Env: IOTHUB_CONNECTION_STRING (iothubowner), IOTHUB_SERVICE_CONNECTION_STRING,
//      TEST_PREFIX, DEVICE_TRANSPORT, NODE_EXTRA_CA_CERTS=<data-dir>/ca.pem
'use strict';

const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, ModuleClient } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { assert, env, expectHttpError, info, main, step, userProps } = require('./lib/common');

const TRANSPORT = env('DEVICE_TRANSPORT');
assert.ok(['mqtt', 'ws'].includes(TRANSPORT), `DEVICE_TRANSPORT must be mqtt or ws, got ${TRANSPORT}`);
const Protocol = TRANSPORT === 'ws' ? MqttWs : Mqtt;
const PREFIX = env('TEST_PREFIX');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function eventually(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function queryAll(registry, text) {
  const query = registry.createQuery(text, 2);
  const rows = [];
  while (query.hasMoreResults) {
    const { result } = await within(10000, `query ${text}`, query.next());
    rows.push(...result);
  }
  return rows;
}

main(`node/modules.js (${TRANSPORT})`, async () => {
  const registry = Registry.fromConnectionString(env('IOTHUB_CONNECTION_STRING'));
  const service = ServiceClient.fromConnectionString(env('IOTHUB_SERVICE_CONNECTION_STRING'));
  const deviceId = `${PREFIX}d1`;
  const { responseBody: device } = await registry.create({ deviceId });
  const deviceKey = device.authentication.symmetricKey.primaryKey;

  step('addModule: keys generated, etag MQ==; a second add is 409');
  await expectHttpError('module of a missing device', registry.addModule({ deviceId: `${PREFIX}ghost`, moduleId: 'm1' }), {
    status: 404,
    code: 'DeviceNotFound',
  });
  await registry.addModule({ deviceId, moduleId: 'm1' });
  await registry.addModule({ deviceId, moduleId: 'm2' });
  const { responseBody: m1 } = await registry.getModule(deviceId, 'm1');
  info(JSON.stringify(m1));
  assert.equal(m1.moduleId, 'm1');
  assert.equal(m1.deviceId, deviceId);
  assert.equal(m1.etag, 'MQ==');
  assert.equal(m1.connectionState, 'Disconnected');
  const { primaryKey, secondaryKey } = m1.authentication.symmetricKey;
  assert.equal(Buffer.from(primaryKey, 'base64').length, 32);
  assert.notEqual(primaryKey, secondaryKey);
  await expectHttpError('add m1 again', registry.addModule({ deviceId, moduleId: 'm1' }), {
    status: 409,
    code: 'ModuleAlreadyExistsOnDevice',
  });
  await expectHttpError('a reserved module id', registry.addModule({ deviceId, moduleId: '$edgeHub' }), {
    status: 400,
    code: 'ArgumentInvalid',
  });
  const { responseBody: listed } = await registry.getModulesOnDevice(deviceId);
  assert.deepEqual(listed.map((m) => m.moduleId), ['m1', 'm2']);

  step('updateModule swaps the keys (as module_identity.js does); etag moves');
  const swapped = { ...m1, authentication: { type: 'sas', symmetricKey: { primaryKey: secondaryKey, secondaryKey: primaryKey } } };
  const { responseBody: updated } = await registry.updateModule(swapped);
  assert.equal(updated.authentication.symmetricKey.primaryKey, secondaryKey);
  assert.notEqual(updated.etag, m1.etag);
  await expectHttpError('update with a stale etag', registry.updateModule(swapped), { status: 412, code: 'PreconditionFailed' });
  const moduleCs = (id, key) => `HostName=localhost;DeviceId=${deviceId};ModuleId=${id};SharedAccessKey=${key}`;

  step(`ModuleClient over ${TRANSPORT}: a device key does not open a module`);
  const impostor = ModuleClient.fromConnectionString(moduleCs('m1', deviceKey), Protocol);
  impostor.setRetryPolicy(new NoRetry());
  let opened = false;
  try {
    await within(15000, 'impostor open()', impostor.open());
    opened = true;
  } catch (err) {
    info(`device key for m1 -> ${err.name}: ${err.message}`);
    assert.equal(err.name, 'UnauthorizedError');
  } finally {
    await within(5000, 'impostor close()', impostor.close()).catch(() => {});
  }
  assert.ok(!opened, 'a module opened with its device key');

  const c1 = ModuleClient.fromConnectionString(moduleCs('m1', secondaryKey), Protocol);
  const { responseBody: m2 } = await registry.getModule(deviceId, 'm2');
  const c2 = ModuleClient.fromConnectionString(moduleCs('m2', m2.authentication.symmetricKey.primaryKey), Protocol);
  // No retries: its session is closed when m2 is removed, and that must show.
  c2.setRetryPolicy(new NoRetry());
  const deviceClient = Client.fromConnectionString(`HostName=localhost;DeviceId=${deviceId};SharedAccessKey=${deviceKey}`, Protocol);
  try {
    await within(15000, 'm1 open()', c1.open());
    await within(15000, 'm2 open()', c2.open());
    await within(15000, 'device open()', deviceClient.open());
    const { responseBody: live } = await registry.getModule(deviceId, 'm1');
    assert.equal(live.connectionState, 'Connected', 'module presence');

    step('module twins: fresh, isolated, desired patches reach only their module');
    const t1 = await within(10000, 'm1 getTwin()', c1.getTwin());
    const t2 = await within(10000, 'm2 getTwin()', c2.getTwin());
    const td = await within(10000, 'device getTwin()', deviceClient.getTwin());
    const got = { m1: [], m2: [], device: [] };
    t1.on('properties.desired', (d) => got.m1.push(d));
    t2.on('properties.desired', (d) => got.m2.push(d));
    td.on('properties.desired', (d) => got.device.push(d));
    await eventually('initial desired events', () => got.m1.length >= 1 && got.m2.length >= 1 && got.device.length >= 1);
    const before = { m2: got.m2.length, device: got.device.length };

    const { responseBody: twin } = await registry.getModuleTwin(deviceId, 'm1');
    assert.equal(twin.moduleId, 'm1', 'the module twin carries moduleId (Twin.update needs it)');
    assert.equal(twin.deviceId, deviceId);
    assert.equal(twin.etag, 'AAAAAAAAAAE=');
    await within(10000, 'twin.update', twin.update({ tags: { role: 'sensor' }, properties: { desired: { interval: 7 } } }));
    const delivered = await eventually('m1 desired patch', () => got.m1.find((d) => d.interval === 7));
    assert.equal(delivered.$version, 2);
    await sleep(300);
    assert.equal(got.m2.length, before.m2, 'm2 heard m1\'s desired patch');
    assert.equal(got.device.length, before.device, 'the device heard its module\'s desired patch');

    const { responseBody: afterUpdate } = await registry.updateModuleTwin(deviceId, 'm1', { properties: { desired: { interval: 9 } } }, '*');
    assert.equal(afterUpdate.properties.desired.interval, 9);
    await eventually('m1 second patch', () => got.m1.find((d) => d.interval === 9));

    step('the module reports; the device twin is untouched');
    await within(10000, 'm1 reported update', new Promise((resolve, reject) => {
      t1.properties.reported.update({ firmware: '1.4', temp: { unit: 'C' } }, (err) => (err ? reject(err) : resolve()));
    }));
    const { responseBody: reported } = await registry.getModuleTwin(deviceId, 'm1');
    assert.deepEqual(userProps(reported.properties.reported), { firmware: '1.4', temp: { unit: 'C' } });
    assert.deepEqual(reported.tags, { role: 'sensor' });
    const { responseBody: deviceTwin } = await registry.getTwin(deviceId);
    assert.deepEqual(userProps(deviceTwin.properties.reported), {}, 'device reported');
    assert.deepEqual(deviceTwin.tags || {}, {}, 'device tags');

    step('direct methods to a module');
    c1.onMethod('ping', (request, response) => response.send(200, { pong: request.payload }, () => {}));
    const { result } = await within(30000, 'invoke module method', service.invokeDeviceMethod(deviceId, 'm1', {
      methodName: 'ping', payload: 'x', responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10,
    }));
    assert.deepEqual(result, { status: 200, payload: { pong: 'x' } });
    await expectHttpError('method to m2 (no handler subscribed)',
      within(20000, 'invoke m2', service.invokeDeviceMethod(deviceId, 'm2', { methodName: 'ping' })), {
        status: 404,
        code: 'DeviceNotOnline',
      });

    step('devices.modules queries');
    const rows = await queryAll(registry, `SELECT * FROM devices.modules WHERE deviceId = '${deviceId}'`);
    assert.deepEqual(rows.map((r) => r.moduleId), ['m1', 'm2']);
    const tagged = await queryAll(registry, "SELECT * FROM devices.modules WHERE tags.role = 'sensor'");
    assert.deepEqual(tagged.map((r) => `${r.deviceId}/${r.moduleId}`), [`${deviceId}/m1`]);

    step('removeModule closes its connection and forgets it');
    const disconnected = new Promise((resolve) => c2.on('disconnect', resolve));
    await registry.removeModule(deviceId, 'm2');
    await within(15000, 'm2 disconnected after removal', disconnected);
    await expectHttpError('get a removed module', registry.getModule(deviceId, 'm2'), { status: 404, code: 'ModuleNotFound' });
  } finally {
    for (const [name, c] of [['m1', c1], ['m2', c2], ['device', deviceClient]]) {
      await within(5000, `${name} close()`, c.close()).catch(() => {});
    }
  }

  step('deleting the device deletes its modules');
  await registry.delete(deviceId);
  await registry.create({ deviceId });
  const { responseBody: none } = await registry.getModulesOnDevice(deviceId);
  assert.deepEqual(none, []);
  await registry.delete(deviceId);
});
