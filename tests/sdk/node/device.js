// The device endpoint through the official Node device SDK: azure-iot-device +
// azure-iot-device-mqtt, transport `Mqtt` (MQTT/TLS on 8883) or `MqttWs`
// (wss://localhost:443/$iothub/websocket), chosen by DEVICE_TRANSPORT=mqtt|ws.
// Spec §2 (CONNECT, sessions, one connection per identity), §3 (twin GET,
// reported PATCH, desired notifications, error responses), §10.
//
// Covers: connect; twin GET shape (desired/reported `$version`, no `$metadata`,
// no tags); a nested reported patch (reported `$version` and twin `version`
// move, twin etag does not); a bad reported patch answered with the hub's JSON
// error message and changing nothing; desired notifications in `$version` order
// (null deletes, replaceTwin, `{"properties":{"desired":null}}`); presence;
// surviving a server-side kick by a second raw MQTT connection with the same
// identity (the SDK reconnects with clean session 0 and sends no SUBSCRIBE, yet
// still gets desired patches and twin responses); refused connections (wrong
// key, disabled device, expired token).
//
// Every packet the SDK's mqtt.js client sends or receives is recorded (by
// wrapping `mqtt.connect`, which azure-iot-mqtt-base calls), so the script can
// assert what went over the wire, and a failure prints the trace.
//
// Env: IOTHUB_CONNECTION_STRING (iothubowner), TEST_PREFIX, DEVICE_TRANSPORT,
//      NODE_EXTRA_CA_CERTS=<data-dir>/ca.pem
'use strict';

const fs = require('node:fs');
const { Registry, IoTHubTokenCredentials } = require('azure-iothub');
const { IoTHubRegistryManager } = require('azure-iothub/dist/cl/iothub_registry_manager');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { NoRetry, SharedAccessSignature } = require('azure-iot-common');
const mqtt = require('mqtt');
const { assert, env, info, main, step, userProps, withWrongKey } = require('./lib/common');

const TRANSPORT = env('DEVICE_TRANSPORT');
assert.ok(['mqtt', 'ws'].includes(TRANSPORT), `DEVICE_TRANSPORT must be mqtt or ws, got ${TRANSPORT}`);
const Protocol = TRANSPORT === 'ws' ? MqttWs : Mqtt;
const PREFIX = env('TEST_PREFIX');
const CA = fs.readFileSync(env('NODE_EXTRA_CA_CERTS'), 'utf8');

// ---------------------------------------------------------------- wire trace

// Packets of the SDK's MQTT connections, in order: {conn, dir, cmd, ...}.
const wire = [];
let connections = 0;
const rawConnect = mqtt.connect;
mqtt.connect = function tracedConnect(...args) {
  const client = rawConnect.apply(this, args);
  const conn = ++connections;
  const record = (dir) => (packet) => {
    const entry = { conn, dir, cmd: packet.cmd };
    if (packet.cmd === 'connack') entry.returnCode = packet.returnCode;
    if (packet.cmd === 'publish') entry.topic = packet.topic;
    if (packet.cmd === 'subscribe') entry.topics = packet.subscriptions.map((s) => s.topic);
    wire.push(entry);
  };
  // mqtt.js writes CONNECT from its constructor, before a listener can be
  // attached: record it from the options it was built with.
  wire.push({ conn, dir: '>', cmd: 'connect', clean: client.options.clean });
  client.on('packetsend', (packet) => packet.cmd !== 'connect' && record('>')(packet));
  client.on('packetreceive', record('<'));
  client.on('close', () => wire.push({ conn, dir: '-', cmd: 'socket closed' }));
  return client;
};

function wireTrace(from = 0) {
  return wire
    .slice(from)
    .map((p) => `#${p.conn} ${p.dir} ${p.cmd}${p.topic ? ` ${p.topic}` : ''}${p.topics ? ` ${p.topics.join(',')}` : ''}` +
      `${p.clean !== undefined ? ` clean=${p.clean}` : ''}${p.returnCode !== undefined ? ` rc=${p.returnCode}` : ''}`)
    .join('\n      ');
}

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Bounds an await: rejects with a clear message instead of hanging.
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

function report(twin, patch) {
  return within(10000, `reported patch ${JSON.stringify(patch)}`, new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  }));
}

// The raw `{desired, reported}` body of a twin GET, as the transport parsed it
// (the Twin object merges it into its own shape, which would hide extra keys).
function rawTwinGet(client) {
  return within(10000, 'twin GET', new Promise((resolve, reject) => {
    client._transport.getTwin((err, body) => (err ? reject(err) : resolve(body)));
  }));
}

function sasToken(resource, key, expiry) {
  return SharedAccessSignature.create(resource, undefined, key, expiry).toString();
}

async function expectRefused(what, connectionString) {
  const client = Client.fromConnectionString(connectionString, Protocol);
  client.setRetryPolicy(new NoRetry());
  let opened = false;
  try {
    await within(15000, `${what}: open()`, client.open());
    opened = true;
  } catch (err) {
    assert.ok(!/^timed out/.test(err.message), `${what}: ${err.message}`);
    info(`${what} -> ${err.name}: ${err.message}`);
    assert.equal(err.name, 'UnauthorizedError', `${what}: error class (${err.name}: ${err.message})`);
    assert.match(err.message, /Not authorized/, `${what}: message`);
  } finally {
    await within(5000, `${what}: close()`, client.close()).catch(() => {});
  }
  assert.ok(!opened, `${what}: open() succeeded`);
}

// ---------------------------------------------------------------- the test

main(`node/device.js (${TRANSPORT})`, async () => {
  const serviceCs = env('IOTHUB_CONNECTION_STRING');
  const registry = Registry.fromConnectionString(serviceCs);
  const manager = new IoTHubRegistryManager(new IoTHubTokenCredentials(serviceCs));
  const id = `${PREFIX}dev1`;
  const { responseBody: device } = await within(10000, 'create device', registry.create({ deviceId: id }));
  const key = device.authentication.symmetricKey.primaryKey;
  const cs = `HostName=localhost;DeviceId=${id};SharedAccessKey=${key}`;
  const twinOf = async () => (await within(10000, 'registry.getTwin', registry.getTwin(id))).responseBody;
  const deviceOf = async () => (await within(10000, 'registry.get', registry.get(id))).responseBody;

  const client = Client.fromConnectionString(cs, Protocol);
  try {
    await run();
  } catch (err) {
    console.error(`    SDK wire trace:\n      ${wireTrace()}`);
    throw err;
  } finally {
    await within(5000, 'close()', client.close()).catch(() => {});
  }

  async function run() {
    const sdkEvents = [];
    client.on('connect', () => sdkEvents.push('connect'));
    client.on('disconnect', (r) => sdkEvents.push(`disconnect ${r && r.transportError}`));
    client.on('error', (err) => sdkEvents.push(`error ${err}`));
    const transportDrops = [];
    client._transport.on('disconnect', (err) => transportDrops.push(err));

    step(`connect over ${TRANSPORT}`);
    await within(15000, 'open()', client.open());
    const connect = wire.find((p) => p.dir === '>' && p.cmd === 'connect');
    assert.ok(connect, 'the SDK sent a CONNECT');
    assert.equal(connect.clean, false, 'the SDK connects with clean session 0');
    assert.deepEqual(wire.find((p) => p.cmd === 'connack'), { conn: 1, dir: '<', cmd: 'connack', returnCode: 0 });

    step('twin GET: desired and reported with $version, no $metadata, no tags');
    const body = await rawTwinGet(client);
    info(JSON.stringify(body));
    assert.deepEqual(Object.keys(body).sort(), ['desired', 'reported'], 'GET twin body has exactly desired and reported');
    assert.deepEqual(body.desired, { $version: 1 }, 'fresh desired');
    assert.deepEqual(body.reported, { $version: 1 }, 'fresh reported');
    const twin = await within(10000, 'getTwin()', client.getTwin());
    assert.equal(twin.properties.desired.$version, 1);
    assert.equal(twin.properties.reported.$version, 1);
    assert.equal(twin.properties.desired.$metadata, undefined, 'devices never see $metadata');
    assert.equal(twin.properties.tags, undefined, 'devices never see tags');

    step('presence while connected');
    const connected = await deviceOf();
    info(`connectionState=${connected.connectionState} lastActivityTime=${connected.lastActivityTime}`);
    assert.equal(connected.connectionState, 'Connected');
    const age = Date.now() - Date.parse(connected.lastActivityTime);
    assert.ok(Math.abs(age) < 60000, `lastActivityTime must be recent, got ${connected.lastActivityTime} (${age} ms old)`);

    step('reported patch (nested): reported $version and twin version move, the twin etag does not');
    const before = await twinOf();
    await report(twin, { fw: '1.2.0', radio: { wifi: { ssid: 'lab', rssi: -40 }, on: true } });
    const after = await twinOf();
    assert.deepEqual(userProps(after.properties.reported), { fw: '1.2.0', radio: { wifi: { ssid: 'lab', rssi: -40 }, on: true } });
    assert.equal(after.properties.reported.$version, before.properties.reported.$version + 1, 'reported $version + 1');
    assert.equal(after.version, before.version + 1, 'twin version + 1');
    assert.equal(after.etag, before.etag, 'a reported patch leaves the twin etag alone (spec §7.4)');
    assert.equal(after.properties.desired.$version, before.properties.desired.$version, 'desired $version unchanged');
    await report(twin, { radio: { wifi: null } });
    const merged = await twinOf();
    assert.deepEqual(userProps(merged.properties.reported), { fw: '1.2.0', radio: { on: true } }, 'null deletes in a reported patch');
    assert.equal(merged.properties.reported.$version, after.properties.reported.$version + 1);

    step('a bad reported patch is answered with the hub error message and changes nothing');
    let badErr;
    await report(twin, { 'bad.key': 1 }).then(
      () => assert.fail('a reported patch with key "bad.key" succeeded'),
      (err) => (badErr = err),
    );
    info(`bad patch -> ${badErr.name}: ${badErr.message}`);
    assert.ok(!/^timed out/.test(badErr.message), badErr.message);
    // Node turns a response whose JSON body has an `errorCode` into
    // `new Error(body.message)` (spec §3.4), so the text is the hub's.
    assert.match(badErr.message, /bad\.key/, 'the error carries the hub JSON "message" naming the key');
    const unchanged = await twinOf();
    assert.deepEqual(unchanged.properties.reported, merged.properties.reported, 'reported unchanged after the refused patch');
    assert.equal(unchanged.version, merged.version, 'twin version unchanged after the refused patch');
    await report(twin, { afterBad: true });
    assert.equal((await twinOf()).properties.reported.afterBad, true, 'the connection still works after the refused patch');

    step('desired notifications in $version order: patch, null delete, replaceTwin, desired:null');
    const patches = [];
    twin.on('properties.desired', (delta) => patches.push(JSON.parse(JSON.stringify(delta))));
    // The Twin re-emits the current desired document to a new listener.
    await eventually('the current desired document', () => patches.length >= 1);
    assert.deepEqual(patches[0], { $version: 1 });
    await within(10000, 'updateTwin', registry.updateTwin(id, { properties: { desired: { x: 1, y: { z: 2 }, s: 'keep' } } }, '*'));
    await within(10000, 'updateTwin', registry.updateTwin(id, { properties: { desired: { x: null, y: { z: null, n: 3 } } } }, '*'));
    await within(10000, 'replaceTwin', manager.replaceTwin(id, { properties: { desired: { w: 5, y: { q: 1 } } } }));
    await eventually('the replaceTwin notification', () => patches.length >= 4);
    // The notification of a PUT nulls every key that went away, at any depth
    // (here y.n too), so the SDK's merged copy ends equal to the hub's.
    assert.deepEqual(userProps(twin.properties.desired), userProps((await twinOf()).properties.desired), 'the SDK converges after replaceTwin');
    await within(10000, 'updateTwin', registry.updateTwin(id, { properties: { desired: null } }, '*'));
    await eventually('4 desired notifications', () => patches.length >= 5);
    info(patches.slice(1).map((p) => JSON.stringify(p)).join(' '));
    assert.deepEqual(patches.slice(1, 3), [
      { x: 1, y: { z: 2 }, s: 'keep', $version: 2 },
      { x: null, y: { z: null, n: 3 }, $version: 3 },
    ], 'patches arrive as sent, nulls included');
    // After a PUT the device gets the new document plus a null for each key
    // that went away, nested ones included.
    assert.deepEqual(patches[3], { w: 5, y: { q: 1, n: null }, s: null, $version: 4 }, 'notification of replaceTwin');
    assert.deepEqual(patches[4], { w: null, y: null, $version: 5 }, 'notification of {"properties":{"desired":null}}');
    assert.deepEqual(patches.map((p) => p.$version), [1, 2, 3, 4, 5], 'in $version order, none repeated');
    assert.deepEqual(userProps(twin.properties.desired), {}, 'the SDK twin converged to an empty desired document');
    assert.equal(twin.properties.desired.$version, 5);

    step('a second raw MQTT connection with the same identity kicks the SDK; the SDK comes back without SUBSCRIBE');
    const subscribed = wire.filter((p) => p.cmd === 'subscribe').flatMap((p) => p.topics);
    assert.ok(subscribed.includes('$iothub/twin/res/#'), `the SDK subscribed to twin responses: ${subscribed}`);
    assert.ok(subscribed.includes('$iothub/twin/PATCH/properties/desired/#'), `the SDK subscribed to desired patches: ${subscribed}`);
    const mark = wire.length;
    const connectsBefore = sdkEvents.filter((e) => e === 'connect').length;
    const dropsBefore = transportDrops.length;
    const raw = rawConnect('mqtts://localhost:8883', {
      clientId: id,
      username: `localhost/${id}/?api-version=2021-04-12`,
      password: sasToken(`localhost/devices/${id}`, key, Math.floor(Date.now() / 1000) + 3600),
      clean: false,
      protocolVersion: 4,
      keepalive: 60,
      reconnectPeriod: 0,
      ca: CA,
    });
    const rawEvents = [];
    raw.on('close', () => rawEvents.push('close'));
    raw.on('error', (err) => rawEvents.push(`error ${err.message}`));
    let connack;
    try {
      connack = await within(10000, 'the raw client CONNACK', new Promise((resolve, reject) => {
        raw.once('connect', resolve);
        raw.once('error', reject);
      }));
    } finally {
      // The SDK retries at once and in turn kicks the raw client; close it
      // in any case so that it can never take the identity back.
      await within(5000, 'raw client end()', new Promise((resolve) => raw.end(true, {}, resolve))).catch(() => {});
    }
    info(`raw CONNACK returnCode=${connack.returnCode} sessionPresent=${connack.sessionPresent}; raw events: ${rawEvents.join(', ')}`);
    assert.equal(connack.returnCode, 0, 'the second connection is accepted');
    assert.equal(connack.sessionPresent, true, 'clean=0 CONNACK reports the stored session (spec §2.3)');
    await eventually('the hub dropping the SDK connection', () => transportDrops.length > dropsBefore);
    info(`SDK transport disconnect: ${transportDrops[dropsBefore]}`);
    await eventually('the SDK reconnecting', () => sdkEvents.filter((e) => e === 'connect').length > connectsBefore, 20000);
    await eventually('Connected presence after the reconnect', async () => (await deviceOf()).connectionState === 'Connected');
    await within(10000, 'updateTwin after the kick', registry.updateTwin(id, { properties: { desired: { after: 'kick' } } }, '*'));
    await eventually('a desired patch after the reconnect', () => patches.length >= 6);
    assert.deepEqual(patches[5], { after: 'kick', $version: 6 }, 'desired patch after the reconnect');
    await report(twin, { afterKick: true });
    assert.equal((await twinOf()).properties.reported.afterKick, true, 'twin responses still reach the SDK after the reconnect');
    const since = wire.slice(mark);
    info(`wire since the raw connect:\n      ${wireTrace(mark)}`);
    const reconnects = since.filter((p) => p.dir === '>' && p.cmd === 'connect');
    assert.ok(reconnects.length >= 1, 'the SDK sent a new CONNECT');
    assert.ok(reconnects.every((p) => p.clean === false), 'the SDK reconnects with clean session 0');
    assert.deepEqual(since.filter((p) => p.cmd === 'subscribe'), [], 'the SDK sent no SUBSCRIBE after the reconnect');
    assert.deepEqual(sdkEvents.filter((e) => e.startsWith('disconnect')), [], 'the SDK recovered without reporting a disconnect');

    step('close: presence turns Disconnected');
    await within(10000, 'close()', client.close());
    const gone = await eventually('Disconnected presence', async () => {
      const d = await deviceOf();
      return d.connectionState === 'Disconnected' && d;
    });
    info(`connectionState=${gone.connectionState} lastActivityTime=${gone.lastActivityTime}`);

    step('refused: wrong key, disabled device, expired token');
    await expectRefused('wrong key', withWrongKey(cs));
    const expired = sasToken(`localhost/devices/${id}`, key, Math.floor(Date.now() / 1000) - 60);
    await expectRefused('expired token', `HostName=localhost;DeviceId=${id};SharedAccessSignature=${expired}`);
    // Disable with the keys in the request, so that the device keeps its key
    // and only its status refuses it.
    const current = await deviceOf();
    const { responseBody: disabled } = await within(10000, 'disable', registry.update({
      deviceId: id,
      status: 'disabled',
      etag: current.etag,
      authentication: { symmetricKey: current.authentication.symmetricKey },
    }));
    assert.equal(disabled.status, 'disabled');
    assert.equal(disabled.authentication.symmetricKey.primaryKey, key, 'the device kept its key');
    await expectRefused('disabled device', cs);
    await within(10000, 'delete', registry.delete(id));
  }
});
