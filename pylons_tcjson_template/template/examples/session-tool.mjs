#!/usr/bin/env node
// Read and change this application's Beaker sessions from Node.js.
//
// What a second service does to share the login with the Pylons application,
// with nothing but Node's standard library: read beaker.session.* from the INI
// file, check the cookie's signature, get the record <prefix><id>:session (one
// JSON object) from Tokyo Tyrant and, to change one key, take the lock the
// application takes, so that neither side loses the other's change.
//
//   node examples/session-tool.mjs development.ini COOKIE get
//   node examples/session-tool.mjs development.ini COOKIE set KEY JSON_VALUE
//
// COOKIE is the Cookie header ("a=1; myapp=<value>") or the cookie's value.
// Exit status: 0 done, 2 bad usage or settings, 3 cookie refused, 4 no live
// session (never saved, logged out, expired), 5 record not readable here,
// 6 session busy, 7 Tokyo Tyrant unavailable -- as examples/session_tool.py.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const EXIT = { usage: 2, cookie: 3, noSession: 4, unreadable: 5, busy: 6, tyrant: 7 };

class Failure extends Error { // ends the program with a message and an exit status
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
const fail = (status, message) => { throw new Failure(status, message); };

// One section of a paster INI file as Python's ConfigParser reads it: `name =
// value`, # and ; comments, indented lines continue a value, and %(name)s
// stands for another option of the section, of [DEFAULT], or `here` (the
// file's folder).  Returns option(name) -> string or undefined.
function readIni(file, wanted) {
  const sections = { DEFAULT: {} };
  let section = null, last = null;
  for (const line of readFileSync(file, 'utf8').split(/\r?\n/)) {
    if (/^\s*([#;]|$)/.test(line)) continue;
    const header = line.match(/^\[(.+)\]\s*$/);
    const option = line.match(/^([^\s=:][^=:]*?)\s*[=:]\s*(.*)$/);
    if (header) [section, last] = [sections[header[1]] ??= {}, null];
    else if (/^\s/.test(line) && last) section[last] += '\n' + line.trim();
    else if (option && section) section[(last = option[1].toLowerCase())] = option[2].trim();
  }
  if (!sections[wanted]) fail(EXIT.usage, `${file} has no [${wanted}]`);
  const options = { here: path.dirname(path.resolve(file)), __file__: file,
                    ...sections.DEFAULT, ...sections[wanted] };
  const expand = (value, depth) => value.replace(/%%|%\(([^)]+)\)s/g, (match, name) => {
    if (match === '%%') return '%';
    const found = options[name.toLowerCase()];
    if (found === undefined || depth > 10) fail(EXIT.usage, `${file}: cannot expand ${match}`);
    return expand(found, depth + 1);
  });
  return (name) => (name in options ? expand(options[name], 0) : undefined);
}

function readSettings(file) {
  let ini;
  try {
    ini = readIni(file, 'app:main');
  } catch (error) {
    throw error instanceof Failure ? error : new Failure(EXIT.usage, `cannot read ${file}: ${error.message}`);
  }
  const option = (name, fallback) => {
    const value = ini(`beaker.session.${name}`) ?? fallback;
    if (value === undefined) fail(EXIT.usage, `${file} sets no beaker.session.${name}`);
    return value;
  };
  const number = (name, fallback) => {
    const value = Number(option(name, fallback));
    if (Number.isFinite(value)) return value;
    fail(EXIT.usage, `${file}: beaker.session.${name} is not a number`);
  };
  const url = option('url');
  if (/[|;,]/.test(url)) { // 'a:1|b:2;c:3': beyond this example
    fail(EXIT.usage, `beaker.session.url ${url} names several servers; this example talks to one host:port`);
  }
  const [, host, port] = url.trim().match(/^\[?(.+?)\]?:(\d+)$/) ?? []; // [::1]:1978 too
  if (!host || !(port > 0 && port < 65536)) fail(EXIT.usage, `beaker.session.url ${url} is not host:port`);
  return {
    host, port: Number(port), prefix: option('prefix', 'beaker:'),
    cookieName: option('key', 'beaker.session.id'), secret: option('secret'),
    connectTimeout: number('connect_timeout', '1'), ioTimeout: number('io_timeout', '2'),
    timeout: number('timeout', '0'), maxSessionSize: number('max_session_size', '1048576'),
  };
}

// The session id inside Beaker's signed cookie: 40 hex digits of
// HMAC-SHA1(secret, id), then the id (32 hex digits), maybe in quotes. Only the
// holder of the secret can make a pair that matches.
function sessionIdFrom(cookie, settings) {
  let value = cookie.trim();
  if (value.includes('=')) { // a whole Cookie header
    const pairs = value.replace(/^cookie:/i, '').split(';').map((part) => part.trim().split('='));
    const found = pairs.find(([name]) => name === settings.cookieName);
    if (!found) fail(EXIT.cookie, `the Cookie header has no ${settings.cookieName} cookie`);
    value = found.slice(1).join('=');
  }
  value = value.trim().replace(/^"|"$/g, '');
  if (!/^[0-9a-f]{72}$/.test(value)) {
    fail(EXIT.cookie, 'malformed session cookie: expected 40 hex digits of signature, then a session id of 32');
  }
  const [signature, sessionId] = [value.slice(0, 40), value.slice(40)];
  const expected = createHmac('sha1', settings.secret).update(sessionId).digest();
  // timingSafeEqual takes as long for a near miss as for a wild guess: the
  // timing does not tell an attacker how many digits were right.
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
    fail(EXIT.cookie, 'forged session cookie: the signature does not match beaker.session.secret');
  }
  return sessionId;
}

// Tokyo Tyrant's binary protocol. A request: the magic byte 0xC8, a command
// byte, the big-endian 32-bit length of each field, then the fields. Every
// answer starts with a status byte, 0 for success; get's goes on with the
// value's length and the value. Requests sent together ("pipelined") are
// answered in order, all in one round trip.
const GET = 0x30, PUT = 0x10, PUTKEEP = 0x11, OUT = 0x20;
const REASONS = { ECONNREFUSED: 'connection refused', ECONNRESET: 'the server reset the connection',
                  EPIPE: 'the server closed the connection' };

function request(command, ...fields) {
  const buffers = fields.map((field) => Buffer.from(field)); // strings as UTF-8
  const lengths = Buffer.alloc(4 * buffers.length);
  buffers.forEach((buffer, index) => lengths.writeUInt32BE(buffer.length, 4 * index));
  return Buffer.concat([Buffer.from([0xc8, command]), lengths, ...buffers]);
}

class Tyrant { // one connection; every failure becomes Failure(EXIT.tyrant)
  constructor({ host, port, ioTimeout }) {
    Object.assign(this, { where: `${host}:${port}`, ioTimeout, received: Buffer.alloc(0) });
    this.socket = net.connect({ host, port }).setNoDelay(true);
    // The idle timer runs only while we wait: for the connection, then for
    // each answer.  Running out, it destroys the socket with this message.
    this.socket.on('timeout', () => this.socket.destroy(new Error(this.waiting)));
    this.chunks = this.socket[Symbol.asyncIterator](); // what the server sends
  }

  async connect(connectTimeout) {
    this.waiting = `no connection within ${connectTimeout}s`;
    this.socket.setTimeout(connectTimeout * 1000);
    try {
      await once(this.socket, 'connect');
    } catch (error) {
      throw this.unavailable(REASONS[error.code] ?? error.message);
    }
    this.socket.setTimeout(0);
    return this;
  }

  unavailable(reason) {
    return new Failure(EXIT.tyrant, `Tokyo Tyrant at ${this.where} is unavailable (${reason})`);
  }

  // Send [command, ...fields] requests at once; their answers in order: get's
  // value (null: no such record), else true for success.
  async pipeline(...requests) {
    this.socket.write(Buffer.concat(requests.map((fields) => request(...fields)))); // errors: in read()
    const answers = [];
    for (const [command] of requests) answers.push(command === GET ? await this.value() : await this.ok());
    return answers;
  }

  async read(size) {
    this.waiting = `no answer within io_timeout=${this.ioTimeout}s`;
    this.socket.setTimeout(this.ioTimeout * 1000);
    try {
      while (this.received.length < size) {
        const { value, done } = await this.chunks.next();
        if (done) throw this.unavailable('the server closed the connection');
        this.received = Buffer.concat([this.received, value]);
      }
    } catch (error) {
      throw error instanceof Failure ? error : this.unavailable(REASONS[error.code] ?? error.message);
    } finally {
      this.socket.setTimeout(0);
    }
    const data = this.received.subarray(0, size);
    this.received = this.received.subarray(size);
    return data;
  }

  async ok() { // a status byte: true for success
    return (await this.read(1))[0] === 0;
  }

  async value() { // get's answer: the value, or null if there is none
    return (await this.ok()) ? this.read((await this.read(4)).readUInt32BE(0)) : null;
  }
}

// The session as an object, or a Failure if it is gone, expired or opaque.
function liveRecord(raw, settings) {
  if (raw === null) fail(EXIT.noSession, 'no such session: never saved, logged out or purged');
  let record = null;
  try {
    record = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch { /* not UTF-8 JSON: refused below */ }
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    fail(EXIT.unreadable, 'the session record is not a JSON object');
  }
  if (record.tcjson === 'beaker-opaque') {
    fail(EXIT.unreadable, 'the session is encrypted by Beaker (beaker.session.encrypt_key): ' +
         'only the Pylons application can read it');
  }
  // Tyrant deletes nothing by itself: an expired record stays until the purge
  // runs. Beaker would ignore it and start a new session.
  const now = Date.now() / 1000;
  if (typeof record._expires === 'number' && now > record._expires) {
    fail(EXIT.noSession, 'the session has expired (_expires has passed)');
  }
  if (settings.timeout && typeof record._accessed_time === 'number' &&
      now - record._accessed_time > settings.timeout) {
    fail(EXIT.noSession, 'the session has expired (idle over beaker.session.timeout)');
  }
  return record;
}

// Take the session's lock, the record the Pylons application creates before it
// writes: putkeep fails while it exists. Returns the record as it is now, and
// the performance.now() at which the lock lapses.
async function lockAndRead(tyrant, lockKey, recordKey, lifetime) {
  const owner = `${os.hostname()}/${process.pid}/${randomBytes(6).toString('hex')}`;
  const deadline = performance.now() + lifetime * 1000;
  for (let pause = 2; ;) {
    const takenAt = performance.now();
    const lock = { tcjson: 'lock', owner, _expires: Date.now() / 1000 + lifetime };
    const [taken, record] = await tyrant.pipeline([PUTKEEP, lockKey, JSON.stringify(lock)], [GET, recordKey]);
    if (taken) return [record, takenAt + lifetime * 1000];
    const [held] = await tyrant.pipeline([GET, lockKey]);
    let expires;
    try {
      expires = JSON.parse(held)?._expires;
    } catch { /* junk: nobody's lock */ }
    const alive = typeof expires === 'number' && expires >= Date.now() / 1000;
    if (held !== null && !alive) { // its holder died: take it over
      await tyrant.pipeline([OUT, lockKey]);
      continue;
    }
    if (performance.now() + pause > deadline) {
      fail(EXIT.busy, `the session is busy: its lock stayed taken for io_timeout=${lifetime}s; try again`);
    }
    if (held !== null) { // else it was released meanwhile
      await sleep(pause);
      pause = Math.min(pause * 2, 100);
    }
  }
}

// Change one key of the session, leaving every other key as it is.
async function setKey(tyrant, settings, sessionId, key, value) {
  const recordKey = `${settings.prefix}${sessionId}:session`;
  const lockKey = `${settings.prefix}lock:${sessionId}:session`;
  let [raw, lapsesAt] = await lockAndRead(tyrant, lockKey, recordKey, settings.ioTimeout);
  try {
    const record = liveRecord(raw, settings); // as read under the lock
    record[key] = value;
    const data = Buffer.from(JSON.stringify(record));
    if (data.length > settings.maxSessionSize) { // the application could not load it
      fail(EXIT.usage, `the session would be ${data.length} bytes, over max_session_size; nothing was written`);
    }
    if (performance.now() >= lapsesAt) { // another program may hold it by now
      fail(EXIT.busy, 'the lock lapsed before the write; nothing was written');
    }
    lapsesAt = 0; // put and unlock in one round trip
    const [stored] = await tyrant.pipeline([PUT, recordKey, data], [OUT, lockKey]);
    if (!stored) fail(EXIT.tyrant, 'Tokyo Tyrant refused to store the session');
  } finally {
    if (performance.now() < lapsesAt) { // failed before the write: unlock
      await tyrant.pipeline([OUT, lockKey]);
    }
  }
}

function parseArguments([ini, cookie, command, key, text, ...extra]) {
  if (!(command === 'get' && key === undefined) && !(command === 'set' && text !== undefined) || extra.length) {
    fail(EXIT.usage, 'usage: session-tool.mjs INI COOKIE get | set KEY JSON_VALUE');
  }
  if (command === 'get') return { ini, cookie, command };
  if (key.startsWith('_') || key === 'tcjson') {
    fail(EXIT.usage, `${key} is reserved: Beaker and the backend keep their own data ` +
         'in "tcjson" and in keys that start with _');
  }
  try {
    return { ini, cookie, command, key, value: JSON.parse(text) };
  } catch {
    fail(EXIT.usage, `${text} is not JSON; quote a string: '"${text}"'`);
  }
}

let tyrant;
try {
  const args = parseArguments(process.argv.slice(2));
  const settings = readSettings(args.ini);
  const sessionId = sessionIdFrom(args.cookie, settings);
  tyrant = await new Tyrant(settings).connect(settings.connectTimeout);
  if (args.command === 'get') {
    const [raw] = await tyrant.pipeline([GET, `${settings.prefix}${sessionId}:session`]);
    console.log(JSON.stringify(liveRecord(raw, settings), null, 2));
  } else {
    await setKey(tyrant, settings, sessionId, args.key, args.value);
    console.log(`stored ${args.key} = ${JSON.stringify(args.value)}`);
  }
} catch (error) {
  if (!(error instanceof Failure)) throw error;
  console.error(`session-tool.mjs: ${error.message}`);
  process.exitCode = error.status;
} finally {
  tyrant?.socket.destroy();
}
