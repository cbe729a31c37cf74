// The device side through the official Node device SDK (azure-iot-device with
// azure-iot-device-mqtt, transport from DEVICE_TRANSPORT: "mqtt" or "ws"):
// twin GET, reported patches, desired notifications (null deletes included),
// presence, surviving a server-side kick without re-subscribing, and refused
// connections (wrong key, disabled device, expired token).
'use strict';

const { Registry } = require('azure-iothub');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { SharedAccessSignature, anHourFromNow } = require('azure-iot-common');
const mqtt = require('mqtt');
const { assert, env, info, main, step, withWrongKey } = require('./lib/common');

const PREFIX = env('TEST_PREFIX');
const TRANSPORT = env('DEVICE_TRANSPORT');
const Protocol = TRANSPORT === 'ws' ? MqttWs : Mqtt;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function report(twin, patch) {
  return new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
}

function deviceConnectionString(id, key) {
  return `HostName=localhost;DeviceId=${id};SharedAccessKey=${key}`;
}

async function expectRefused(what, connectionString) {
  const client = Client.fromConnectionString(connectionString, Protocol);
  client.setRetryPolicy(new (require('azure-iot-common').NoRetry)());
  try {
    await client.open();
  } catch (err) {
    info(`${what} -> ${err.name}: ${err.message}`);
    assert.match(`${err.name} ${err.message}`, /Unauthorized|Not authorized/i, `${what}: must be refused as unauthorized`);
    return;
  } finally {
    await client.close().catch(() => {});
  }
  assert.fail(`${what}: open() succeeded`);
}

main('device_twin.js', async () => {
  const registry = Registry.fromConnectionString(env('IOTHUB_CONNECTION_STRING'));
  const id = `${PREFIX}dev`;
  const { responseBody: device } = await registry.create({ deviceId: id });
  const key = device.authentication.symmetricKey.primaryKey;
  const cs = deviceConnectionString(id, key);

  step(`connect over ${TRANSPORT}`);
  const client = Client.fromConnectionString(cs, Protocol);
  let connects = 0;
  client.on('connect', () => (connects += 1));
  await client.open();
  const twin = await client.getTwin();
  assert.equal(twin.properties.desired.$version, 1);
  assert.equal(twin.properties.reported.$version, 1);
  assert.equal(twin.properties.desired.$metadata, undefined, 'devices never see $metadata');

  const patches = [];
  twin.on('properties.desired', (delta) => patches.push(JSON.parse(JSON.stringify(delta))));
  await eventually('the current desired document', () => patches.length >= 1);

  step('presence');
  const { responseBody: connected } = await registry.get(id);
  assert.equal(connected.connectionState, 'Connected');
  assert.ok(Date.now() - Date.parse(connected.lastActivityTime) < 120000, `recent lastActivityTime: ${connected.lastActivityTime}`);

  step('reported patch: versions move, the twin etag does not');
  const before = (await registry.getTwin(id)).responseBody;
  await report(twin, { fw: '2.0', nested: { a: 1 } });
  const after = (await registry.getTwin(id)).responseBody;
  assert.equal(after.properties.reported.fw, '2.0');
  assert.equal(after.properties.reported.nested.a, 1);
  assert.equal(after.properties.reported.$version, before.properties.reported.$version + 1);
  assert.equal(after.version, before.version + 1);
  assert.equal(after.etag, before.etag, 'reported updates leave the twin etag alone');

  step('an invalid reported patch is an error and changes nothing');
  await assert.rejects(report(twin, { 'bad.key': 1 }), (err) => {
    info(`bad patch -> ${err.message}`);
    return /bad\.key/.test(err.message);
  });
  assert.deepEqual((await registry.getTwin(id)).responseBody.properties.reported.$version, after.properties.reported.$version);

  step('desired patches arrive in order, nulls included');
  await registry.updateTwin(id, { properties: { desired: { x: 1, y: { z: 2 } } } }, '*');
  await registry.updateTwin(id, { properties: { desired: { x: null } } }, '*');
  await registry.updateTwin(id, { properties: { desired: null } }, '*');
  await eventually('three desired notifications', () => patches.length >= 4);
  assert.deepEqual(patches.slice(1), [
    { x: 1, y: { z: 2 }, $version: 2 },
    { x: null, $version: 3 },
    { y: null, $version: 4 },
  ]);
  assert.equal(twin.properties.desired.y, undefined);

  step('a second connection with the same identity kicks the SDK; the SDK comes back without re-subscribing');
  const token = SharedAccessSignature.create(`localhost/devices/${id}`, undefined, key, anHourFromNow()).toString();
  const raw = mqtt.connect('mqtts://localhost:8883', {
    clientId: id,
    username: `localhost/${id}/?api-version=2021-04-12`,
    password: token,
    clean: false,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  const connack = await new Promise((resolve, reject) => {
    raw.once('connect', resolve);
    raw.once('error', reject);
  });
  assert.equal(connack.returnCode, 0);
  assert.equal(connack.sessionPresent, true, 'the SDK session (and its subscriptions) existed');
  const connectsBefore = connects;
  await new Promise((resolve) => raw.end(true, resolve));
  await eventually('the SDK reconnecting', () => connects > connectsBefore, 30000);
  await registry.updateTwin(id, { properties: { desired: { after: 'kick' } } }, '*');
  await eventually('a desired patch after the reconnect', () => patches.some((p) => p.after === 'kick'), 20000);
  await client.close();
  await eventually('Disconnected presence', async () => (await registry.get(id)).responseBody.connectionState === 'Disconnected');

  step('refused: wrong key, expired token, disabled device');
  await expectRefused('wrong key', withWrongKey(cs));
  const expired = SharedAccessSignature.create(`localhost/devices/${id}`, undefined, key, Math.floor(Date.now() / 1000) - 60).toString();
  await expectRefused('expired token', `HostName=localhost;DeviceId=${id};SharedAccessSignature=${expired}`);
  await registry.update({ deviceId: id, status: 'disabled' });
  await expectRefused('disabled device', cs);

  await registry.delete(id);
});
