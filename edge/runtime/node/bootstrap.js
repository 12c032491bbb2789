'use strict';
// The Node.js worker: loads one handler and serves invocations over the agent's
// channel, the same frames as the Python bootstrap (edge/runtime/protocol.py):
//   u32 header_len | header | u32 body_len | body
// The header is JSON, or (for an invoke) the compact binary form described in
// protocol.py; this runtime reads both, and writes an ok result in the compact
// form and every other frame in JSON.
// The channel is two Unix socket fds named in EDGE_CHANNEL_IN / EDGE_CHANNEL_OUT
// (one per direction: Node makes the one it reads non-blocking, and the writes
// below are blocking), so the handler's console output (stdout and stderr, one
// pipe) never touches it.
// Node's built-in modules only: a cold start costs little more than `node` itself.

const fs = require('fs');
const net = require('net');
const path = require('path');
const { pathToFileURL } = require('url');

const IN_FD = Number(process.env.EDGE_CHANNEL_IN);
const OUT_FD = Number(process.env.EDGE_CHANNEL_OUT);
const LOG_MARK = '\x1eedge:';
const MAX_HEADER = 1 << 20;
const MAX_BODY = 256 << 20;

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
    }
  }
}

function writeFrame(header, body) {
  const raw = Buffer.from(JSON.stringify(header), 'utf8');
  const data = body || Buffer.alloc(0);
  const out = Buffer.allocUnsafe(8 + raw.length + data.length);
  out.writeUInt32BE(raw.length, 0);
  raw.copy(out, 4);
  out.writeUInt32BE(data.length, 4 + raw.length);
  data.copy(out, 8 + raw.length);
  writeAll(OUT_FD, out);
}

// An ok result in the compact header (protocol.py): one of these per invocation, and the
// agent reads it without a JSON parse.
//   u8 2 | u8 content type | u8 flags (1: logged) | f64 duration_ms | request_id
const CONTENT_TYPES = ['none', 'application/json', 'application/octet-stream'];

function writeOkResult(requestId, contentType, durationMs, logged, body) {
  const rlen = Buffer.byteLength(requestId, 'utf8');
  const hlen = 11 + rlen;
  const out = Buffer.allocUnsafe(8 + hlen + body.length);
  out.writeUInt32BE(hlen, 0);
  out[4] = 2;
  out[5] = CONTENT_TYPES.indexOf(contentType);
  out[6] = logged ? 1 : 0;
  out.writeDoubleBE(durationMs, 7);
  out.write(requestId, 15, 'utf8');
  out.writeUInt32BE(body.length, 4 + hlen);
  body.copy(out, 8 + hlen);
  writeAll(OUT_FD, out);
}

// The first console write of an invocation is preceded by a start marker with its
// request id, and the invocation's end closes it: the agent tags each line exactly.
// stdout and stderr are one pipe, written synchronously, so markers land in order.
let tagId = '';
let tagOpen = false;
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write.bind(stream);
  stream.write = (chunk, ...rest) => {
    if (!tagOpen && tagId) {
      writeAll(1, Buffer.from(`${LOG_MARK}start ${tagId}\n`, 'utf8'));
      tagOpen = true;
    }
    return write(chunk, ...rest);
  };
}

function beginTag(requestId) {
  tagId = requestId;
}

function endTag() {
  if (tagOpen) writeAll(1, Buffer.from(`${LOG_MARK}end\n`, 'utf8'));
  tagOpen = false;
  tagId = '';
}

function errorRecord(err, errorType) {
  if (err instanceof Error) {
    const lines = String(err.stack || '').split('\n').slice(1).map((l) => l.trim());
    return {
      errorType: errorType || err.name || (err.constructor && err.constructor.name) || 'Error',
      errorMessage: String(err.message),
      stackTrace: lines.filter((l) => l && !l.includes(__filename) && !/\(?node:/.test(l)),
    };
  }
  return { errorType: errorType || 'Error', errorMessage: String(err), stackTrace: [] };
}

function encodeResult(value) {
  if (value === undefined || value === null) return ['none', Buffer.alloc(0)];
  if (Buffer.isBuffer(value)) return ['application/octet-stream', value];
  if (value instanceof Uint8Array) return ['application/octet-stream', Buffer.from(value)];
  const text = JSON.stringify(value);
  if (text === undefined) return ['none', Buffer.alloc(0)];
  return ['application/json', Buffer.from(text, 'utf8')];
}

class HandlerNotFound extends Error {}

async function loadHandler(dir, handler) {
  const dot = handler.lastIndexOf('.');
  if (dot <= 0 || dot === handler.length - 1) {
    throw new HandlerNotFound(`handler '${handler}' is not of the form module.function`);
  }
  const modName = handler.slice(0, dot);
  const funcName = handler.slice(dot + 1);
  const base = path.resolve(dir, modName);
  let mod;
  if (fs.existsSync(`${base}.mjs`)) {
    mod = await import(pathToFileURL(`${base}.mjs`).href);
  } else {
    const file = ['.js', '.cjs'].map((s) => base + s).find((f) => fs.existsSync(f));
    if (!file) {
      const err = new Error(`Cannot find module '${modName}' in ${dir}`);
      err.code = 'MODULE_NOT_FOUND';
      throw err;
    }
    try {
      mod = require(file);
    } catch (err) {
      if (err && err.code === 'ERR_REQUIRE_ESM') mod = await import(pathToFileURL(file).href);
      else throw err;
    }
  }
  let func = mod ? mod[funcName] : undefined;
  if (func === undefined && mod && mod.default) func = mod.default[funcName];
  if (func === undefined) {
    throw new HandlerNotFound(`module '${modName}' has no handler function '${funcName}'`);
  }
  if (typeof func !== 'function') throw new HandlerNotFound(`handler '${handler}' is not callable`);
  return func;
}

let init = null;
let handlerFn = null;
let current = null; // the invocation in progress: {requestId, finish}
let nextCall = 0;
const pendingCalls = new Map();
const queue = [];

function callAgent(op, fields, body) {
  nextCall += 1;
  const id = nextCall;
  return new Promise((resolve, reject) => {
    pendingCalls.set(id, { resolve, reject });
    writeFrame(Object.assign({ type: 'call', id, op }, fields), body);
  });
}

function makeContext(req, started) {
  const deadline = started + Number(req.timeout_ms || 3000);
  let continuations = 0;
  const ctx = {
    functionName: init.function_name || '',
    functionVersion: init.function_version || '',
    invokedFunctionArn: init.invoked_function_arn || '',
    memoryLimitInMB: String(init.memory_limit_in_mb || 128),
    awsRequestId: req.request_id || '',
    logGroupName: init.log_group_name || '',
    logStreamName: init.log_stream_name || '',
    identity: { cognitoIdentityId: null, cognitoIdentityPoolId: null },
    clientContext: { custom: { subject: req.topic || '' }, env: {}, client: {} },
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis() {
      return Math.max(0, Math.floor(deadline - Date.now()));
    },
    // Durably queue a continuation of this component; resolves once recorded.
    async invokeSelf(event) {
      continuations += 1;
      let body;
      let encoding = 'json';
      if (Buffer.isBuffer(event) || event instanceof Uint8Array) {
        body = Buffer.from(event);
        encoding = 'binary';
      } else {
        body = Buffer.from(JSON.stringify(event), 'utf8');
      }
      const reply = await callAgent('invoke_self', { index: continuations, encoding }, body);
      if (!reply.ok) throw new Error(`continuation not recorded: ${reply.error}`);
    },
  };
  ctx.done = (err, value) => current && current.finish(err, value);
  ctx.succeed = (value) => ctx.done(null, value);
  ctx.fail = (err) => ctx.done(err);
  return ctx;
}

function invoke(req, payload) {
  const started = Date.now();
  const requestId = req.request_id || '';
  beginTag(requestId);
  let done = false;
  const finish = (err, value, fatal) => {
    if (done) return;
    done = true;
    current = null;
    const reply = { type: 'result', request_id: requestId };
    let body = Buffer.alloc(0);
    if (err !== null && err !== undefined) {
      Object.assign(reply, { ok: false, error: errorRecord(err) });
    } else {
      try {
        const [contentType, data] = encodeResult(value);
        Object.assign(reply, { ok: true, content_type: contentType });
        body = data;
      } catch (e) {
        const rec = errorRecord(e, 'Runtime.MarshalError');
        rec.errorMessage = `Unable to marshal response: ${e.message}`;
        Object.assign(reply, { ok: false, error: rec });
      }
    }
    if (reply.ok && !fatal) {
      const logged = tagOpen;  // the agent forwards this output before the result
      endTag();
      writeOkResult(requestId, reply.content_type, Date.now() - started, logged, body);
      setImmediate(pump);
      return;
    }
    if (fatal) reply.fatal = true;
    reply.duration_ms = Date.now() - started;
    if (tagOpen) reply.logged = true;  // the agent forwards this output before the result
    endTag();
    writeFrame(reply, body);
    if (fatal) process.exit(1);
    setImmediate(pump);
  };
  current = { requestId, finish };
  let event;
  try {
    event = req.encoding === 'binary' ? payload : JSON.parse(payload.toString('utf8'));
  } catch (e) {
    // The runtime's error, not the handler's (the agent leaves this check to us).
    const bad = new Error(`payload on topic '${req.topic || ''}' is not JSON (${payload.length} bytes)`);
    bad.name = 'Runtime.InvalidEvent';
    bad.stack = '';
    finish(bad);
    return;
  }
  const context = makeContext(req, started);
  let ret;
  try {
    ret = handlerFn(event, context, (err, value) => finish(err, value));
  } catch (e) {
    finish(e);
    return;
  }
  if (ret && typeof ret.then === 'function') {
    ret.then(
      (value) => finish(null, value),
      (err) => finish(err === undefined || err === null ? new Error('rejected') : err),
    );
  } else if (handlerFn.length < 3) {
    finish(null, ret);
  }
  // else: a callback handler; the agent's deadline covers one that never calls back.
}

function pump() {
  if (current || !handlerFn) return;
  const item = queue.shift();
  if (item) invoke(item.header, item.body);
}

async function onFrame(header, body) {
  switch (header.type) {
    case 'init': {
      init = header;
      try {
        handlerFn = await loadHandler(header.dir, header.handler);
      } catch (err) {
        const kind = err instanceof HandlerNotFound
          ? 'Runtime.HandlerNotFound' : 'Runtime.ImportModuleError';
        const rec = errorRecord(err, kind);
        if (err instanceof HandlerNotFound) rec.stackTrace = [];
        writeFrame({ type: 'init_error', error: rec });
        process.exit(1);
      }
      writeFrame({ type: 'ready', pid: process.pid });
      pump();
      break;
    }
    case 'invoke':
      queue.push({ header, body });
      pump();
      break;
    case 'reply': {
      const call = pendingCalls.get(header.id);
      if (call) {
        pendingCalls.delete(header.id);
        call.resolve(header);
      }
      break;
    }
    case 'stop':
      process.exit(0);
      break;
    default:
      break;
  }
}

process.on('uncaughtException', (err) => {
  if (current) current.finish(err, undefined, true);
  else {
    process.stderr.write(`uncaught exception outside an invocation: ${err && err.stack}\n`);
    process.exit(1);
  }
});
process.on('unhandledRejection', (reason) => {
  const err = reason instanceof Error ? reason : new Error(String(reason));
  err.name = 'Runtime.UnhandledPromiseRejection';
  if (current) current.finish(err, undefined, true);
});

const ENCODINGS = ['json', 'binary'];

// A frame header: JSON, or the compact invoke header
// (u8 1 | u8 encoding | u32 timeout_ms | u16 len(request_id) | request_id | topic).
function decodeHeader(raw) {
  if (raw.length >= 8 && raw[0] === 1) {
    const rlen = raw.readUInt16BE(6);
    return {
      type: 'invoke',
      encoding: ENCODINGS[raw[1]] || 'json',
      timeout_ms: raw.readUInt32BE(2),
      request_id: raw.subarray(8, 8 + rlen).toString('utf8'),
      topic: raw.subarray(8 + rlen).toString('utf8'),
    };
  }
  return JSON.parse(raw.toString('utf8'));
}

let buf = Buffer.alloc(0);
// A net.Socket on the fd, not an fs stream: libuv then waits for it in the event loop
// itself, where an fs stream runs every read on its thread pool (two thread
// hand-offs per frame).
const input = new net.Socket({ fd: IN_FD, readable: true, writable: false });
input.on('data', (chunk) => {
  buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
  for (;;) {
    if (buf.length < 4) return;
    const hlen = buf.readUInt32BE(0);
    if (hlen > MAX_HEADER) process.exit(2);
    if (buf.length < 8 + hlen) return;
    const blen = buf.readUInt32BE(4 + hlen);
    if (blen > MAX_BODY) process.exit(2);
    const total = 8 + hlen + blen;
    if (buf.length < total) return;
    const header = decodeHeader(buf.subarray(4, 4 + hlen));
    const body = Buffer.from(buf.subarray(8 + hlen, total));
    buf = buf.subarray(total);
    onFrame(header, body);
  }
});
input.on('end', () => process.exit(0));
input.on('error', () => process.exit(0));
