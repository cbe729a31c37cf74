// Direct methods through the official Node SDKs: the service side with
// azure-iothub `Client.invokeDeviceMethod`, the device side with
// azure-iot-device `Client.onDeviceMethod` over `Mqtt` (MQTT/TLS) or `MqttWs`
// (MQTT over WebSockets), chosen by DEVICE_TRANSPORT=mqtt|ws. Fleet spec §1.
//
// Covers: unknown device (404 DeviceNotFound), offline device and connected
// device without a method handler (404 DeviceNotOnline), a call answered with
// the device's payload and status (200 also for a device status of 404), a call
// that waits for a late device through connectTimeoutInSeconds, a method with no
// handler on the device (504 GatewayTimeout after the response timeout), bad
// timeouts (400 ArgumentInvalid), a payload over 128 KB (413), the module form
// for a module that does not exist (404 ModuleNotFound), and a device that can
// never answer another device's call.
//
// Env: IOTHUB_CONNECTION_STRING (iothubowner), IOTHUB_SERVICE_CONNECTION_STRING
//      (service policy: ServiceConnect), TEST_PREFIX, DEVICE_TRANSPORT,
//      NODE_EXTRA_CA_CERTS=<data-dir>/ca.pem
'use strict';

const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { assert, env, expectHttpError, info, main, step } = require('./lib/common');

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

async function createDevice(registry, id) {
  const { responseBody: device } = await within(10000, `create ${id}`, registry.create({ deviceId: id }));
  return `HostName=localhost;DeviceId=${id};SharedAccessKey=${device.authentication.symmetricKey.primaryKey}`;
}

main(`node/methods.js (${TRANSPORT})`, async () => {
  const registry = Registry.fromConnectionString(env('IOTHUB_CONNECTION_STRING'));
  const service = ServiceClient.fromConnectionString(env('IOTHUB_SERVICE_CONNECTION_STRING'));
  const id = `${PREFIX}m1`;
  const otherId = `${PREFIX}m2`;
  const cs = await createDevice(registry, id);
  const otherCs = await createDevice(registry, otherId);
  const invoke = (target, params) => within(60000, `invokeDeviceMethod ${params.methodName}`, service.invokeDeviceMethod(target, params));

  step('unknown device: 404 DeviceNotFound');
  await expectHttpError('invoke on a missing device', invoke(`${PREFIX}ghost`, { methodName: 'reboot' }), {
    status: 404,
    name: 'DeviceNotFoundError',
    code: 'DeviceNotFound',
  });

  step('registered but offline: 404 DeviceNotOnline at once');
  await expectHttpError('invoke on an offline device', invoke(id, { methodName: 'reboot' }), {
    status: 404,
    code: 'DeviceNotOnline',
  });

  const device = Client.fromConnectionString(cs, Protocol);
  const other = Client.fromConnectionString(otherCs, Protocol);
  try {
    step(`connect over ${TRANSPORT}, no method handler yet: still DeviceNotOnline`);
    await within(15000, 'open()', device.open());
    await expectHttpError('invoke before onDeviceMethod', invoke(id, { methodName: 'reboot' }), {
      status: 404,
      code: 'DeviceNotOnline',
    });

    step('onDeviceMethod: the request reaches the handler, the answer reaches the caller');
    const seen = [];
    device.onDeviceMethod('reboot', (request, response) => {
      seen.push({ name: request.methodName, payload: request.payload });
      response.send(200, { rebooted: true, delay: request.payload && request.payload.delay }, () => {});
    });
    device.onDeviceMethod('lookup', (request, response) => {
      response.send(404, `no such key: ${request.payload}`, () => {});
    });
    // The subscription is sent when the first handler is registered; the
    // connect timeout covers the moment until its SUBACK.
    const { result } = await invoke(id, {
      methodName: 'reboot',
      payload: { delay: 3 },
      responseTimeoutInSeconds: 15,
      connectTimeoutInSeconds: 10,
    });
    info(JSON.stringify(result));
    assert.deepEqual(result, { status: 200, payload: { rebooted: true, delay: 3 } });
    assert.deepEqual(seen, [{ name: 'reboot', payload: { delay: 3 } }]);

    step('a device status of 404 is still HTTP 200, with the device payload');
    const lookup = await invoke(id, { methodName: 'lookup', payload: 'k1', responseTimeoutInSeconds: 10 });
    assert.deepEqual(lookup.result, { status: 404, payload: 'no such key: k1' });

    step('concurrent calls each get their own answer');
    const many = await Promise.all([1, 2, 3, 4, 5].map((n) =>
      invoke(id, { methodName: 'reboot', payload: { delay: n }, responseTimeoutInSeconds: 15 })));
    assert.deepEqual(many.map((m) => m.result.payload.delay), [1, 2, 3, 4, 5]);

    step('another device cannot answer: its handler never sees the call');
    await within(15000, 'open() other', other.open());
    let otherSaw = 0;
    other.onDeviceMethod('reboot', (request, response) => {
      otherSaw += 1;
      response.send(500, 'wrong device', () => {});
    });
    const mine = await invoke(id, { methodName: 'reboot', payload: { delay: 9 }, responseTimeoutInSeconds: 15 });
    assert.deepEqual(mine.result, { status: 200, payload: { rebooted: true, delay: 9 } });
    assert.equal(otherSaw, 0, 'the other device got a call addressed to m1');

    step('a method the device has no handler for: 504 GatewayTimeout after the response timeout');
    const started = Date.now();
    await expectHttpError('invoke an unhandled method', invoke(id, { methodName: 'selfDestruct', responseTimeoutInSeconds: 5 }), {
      status: 504,
      name: 'GatewayTimeoutError',
      code: 'GatewayTimeout',
    });
    const waited = Date.now() - started;
    assert.ok(waited >= 4500 && waited < 15000, `504 after about 5 s, took ${waited} ms`);

    step('bad requests: 400 ArgumentInvalid, 413 MessageTooLarge; nothing reaches the device');
    const calls = seen.length;
    for (const params of [
      { methodName: 'reboot', responseTimeoutInSeconds: 4 },
      { methodName: 'reboot', responseTimeoutInSeconds: 301 },
      { methodName: 'reboot', connectTimeoutInSeconds: 301 },
      { methodName: 'a/b' },
    ]) {
      await expectHttpError(`invoke ${JSON.stringify(params)}`, invoke(id, params), {
        status: 400,
        code: 'ArgumentInvalid',
      });
    }
    await expectHttpError('a 200 KB payload', invoke(id, { methodName: 'reboot', payload: 'x'.repeat(200 * 1024) }), {
      status: 413,
      code: 'MessageTooLarge',
    });
    await expectHttpError('a module that does not exist',
      within(20000, 'invokeDeviceMethod (module form)', service.invokeDeviceMethod(id, 'nomodule', { methodName: 'reboot' })), {
        status: 404,
        code: 'ModuleNotFound',
      });
    assert.equal(seen.length, calls, 'a refused call reached the device');
  } finally {
    await within(5000, 'close()', device.close()).catch(() => {});
    await within(5000, 'close() other', other.close()).catch(() => {});
  }

  step('connectTimeoutInSeconds: a call waits for a device that connects late');
  const late = Client.fromConnectionString(cs, Protocol);
  try {
    const call = invoke(id, { methodName: 'hello', payload: null, responseTimeoutInSeconds: 15, connectTimeoutInSeconds: 20 });
    await sleep(1000);
    // The handler is in place before the connection: the stored clean-session-0
    // subscription makes the device ready from its CONNECT on.
    late.onDeviceMethod('hello', (request, response) => response.send(200, null, () => {}));
    await within(15000, 'open() late', late.open());
    const { result } = await call;
    assert.deepEqual(result, { status: 200, payload: null });
  } finally {
    await within(5000, 'close() late', late.close()).catch(() => {});
  }

  step('after the device closed: DeviceNotOnline again');
  await expectHttpError('invoke after close', invoke(id, { methodName: 'hello' }), {
    status: 404,
    code: 'DeviceNotOnline',
  });

  await registry.delete(id);
  await registry.delete(otherId);
});
