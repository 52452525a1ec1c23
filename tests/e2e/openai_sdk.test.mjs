// End-to-end tests of `quill serve`: a tiny random model is written with the C helper, the
// server is started on 127.0.0.1 with a free port, and the official OpenAI Node SDK and curl
// drive it. Covers chat and completions, streamed and not, usage with cost and timings, error
// classes, model retrieval, HEAD, and a clean exit on SIGTERM.
// Environment: QUILL_BINARY (the quill CLI) and QUILL_MODEL_WRITER (e2e_write_tiny_model).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

const API_KEY = 'e2e-key';
// Prices in USD per million tokens, and the same in picodollars per token (exact integers).
const PRICE_INPUT = '0.15';
const PRICE_OUTPUT = '0.6';
const PRICE_INPUT_PICOUSD = 150000n;
const PRICE_OUTPUT_PICOUSD = 600000n;

let server;
let serverExit;
let port;
let client;
let folder;
let serverLog = '';

function waitForListening() {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening" line in 60 s:\n${serverLog}`)),
      60000);
    server.stderr.setEncoding('utf8');
    server.stderr.on('data', (chunk) => {
      serverLog += chunk;
      const match = serverLog.match(/msg="listening" address=http:\/\/127\.0\.0\.1:(\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    server.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`quill serve exited with ${code} before listening:\n${serverLog}`));
    });
  });
}

before(async () => {
  folder = mkdtempSync(path.join(process.env.QUILL_TEST_TMP_DIR || tmpdir(), 'quill-e2e-'));
  const modelPath = path.join(folder, 'tiny-model.gguf');
  const writer = spawnSync(process.env.QUILL_MODEL_WRITER, [modelPath], { encoding: 'utf8' });
  assert.equal(writer.status, 0, writer.stderr);

  server = spawn(process.env.QUILL_BINARY, [
    'serve', '-m', modelPath, '--host', '127.0.0.1', '--port', '0', '--api-key', API_KEY,
    '--model-alias', 'tiny', '--price-input', PRICE_INPUT, '--price-output', PRICE_OUTPUT,
    '--parallel', '2', '--threads', '1',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  // 'close' rather than 'exit': it fires after stderr has been read to the end, so the log
  // contains the server's last lines.
  serverExit = new Promise((resolve) => server.once('close', (code, signal) => resolve({ code, signal })));
  port = await waitForListening();
  client = new OpenAI({ apiKey: API_KEY, baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });
});

after(async () => {
  if (server && server.exitCode === null && server.signalCode === null) {
    server.kill('SIGKILL');
    await serverExit;
  }
  if (folder) {
    rmSync(folder, { recursive: true, force: true });
  }
});

// Formats picodollars as the server does: decimal USD, up to 12 places, trailing zeros trimmed.
function formatUsd(picousd) {
  const whole = picousd / 1000000000000n;
  let fraction = (picousd % 1000000000000n).toString().padStart(12, '0').replace(/0+$/, '');
  return fraction.length > 0 ? `${whole}.${fraction}` : `${whole}`;
}

function expectedCost(usage) {
  const cached = BigInt(usage.prompt_tokens_details.cached_tokens);
  const uncached = BigInt(usage.prompt_tokens) - cached;
  // --price-cached-input is not given, so cached tokens cost the input price.
  const input = uncached * PRICE_INPUT_PICOUSD;
  const cachedInput = cached * PRICE_INPUT_PICOUSD;
  const output = BigInt(usage.completion_tokens) * PRICE_OUTPUT_PICOUSD;
  return { input, cachedInput, output, total: input + cachedInput + output };
}

function checkUsage(usage) {
  assert.ok(usage.prompt_tokens > 0);
  assert.ok(usage.completion_tokens >= 1);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  assert.ok(usage.prompt_tokens_details.cached_tokens >= 0);
  assert.ok(usage.prompt_tokens_details.cached_tokens <= usage.prompt_tokens);

  const expected = expectedCost(usage);
  assert.equal(usage.cost.input, Number(formatUsd(expected.input)));
  assert.equal(usage.cost.cached_input, Number(formatUsd(expected.cachedInput)));
  assert.equal(usage.cost.output, Number(formatUsd(expected.output)));
  assert.equal(usage.cost.total, Number(formatUsd(expected.total)));

  for (const key of ['queue_ms', 'ttft_ms', 'prefill_ms', 'generation_ms',
    'prefill_tokens_per_second', 'decode_tokens_per_second']) {
    assert.equal(typeof usage.timings[key], 'number', key);
    assert.ok(usage.timings[key] >= 0, key);
  }
}

function curl(args) {
  const result = spawnSync('curl', ['-sS', '-H', `Authorization: Bearer ${API_KEY}`, ...args],
    { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
}

test('models list shows the alias', async () => {
  const models = await client.models.list();
  assert.equal(models.data[0].id, 'tiny');
});

test('chat completion with usage and cost', async () => {
  const reply = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'hello' }], max_tokens: 8, temperature: 0,
  });
  assert.equal(reply.object, 'chat.completion');
  assert.equal(reply.choices[0].message.role, 'assistant');
  assert.equal(typeof reply.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(reply.choices[0].finish_reason));
  assert.ok(reply.usage.completion_tokens <= 8);
  checkUsage(reply.usage);
});

test('chat stream matches the plain reply', async () => {
  const request = {
    model: 'tiny', messages: [{ role: 'user', content: 'stream me' }], max_tokens: 10,
    temperature: 0,
  };
  const plain = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finishReason = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) {
      assert.equal(chunk.choices.length, 0);
      usage = chunk.usage;
      continue;
    }
    text += chunk.choices[0].delta.content ?? '';
    finishReason = chunk.choices[0].finish_reason ?? finishReason;
  }
  assert.equal(text, plain.choices[0].message.content);
  assert.equal(finishReason, plain.choices[0].finish_reason);
  assert.ok(usage !== null);
  assert.equal(usage.completion_tokens, plain.usage.completion_tokens);
  checkUsage(usage);
});

test('completion plain and streamed', async () => {
  const request = { model: 'tiny', prompt: 'once upon', max_tokens: 6, temperature: 0 };
  const plain = await client.completions.create(request);
  assert.equal(plain.object, 'text_completion');
  checkUsage(plain.usage);

  const stream = await client.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) {
      usage = chunk.usage;
      continue;
    }
    text += chunk.choices[0].text;
  }
  assert.equal(text, plain.choices[0].text);
  checkUsage(usage);
});

test('errors map to SDK classes', async () => {
  const wrongKey = new OpenAI({ apiKey: 'wrong', baseURL: client.baseURL, maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(), OpenAI.AuthenticationError);
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-9', messages: [{ role: 'user', content: 'x' }] }),
    OpenAI.NotFoundError);
  await assert.rejects(
    client.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 100000,
    }),
    (error) => error instanceof OpenAI.BadRequestError && error.code === 'context_length_exceeded');
  await assert.rejects(
    client.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_object' },
    }),
    (error) => error instanceof OpenAI.BadRequestError && error.param === 'response_format.type');
  await assert.rejects(client.models.retrieve('gpt-9'), OpenAI.NotFoundError);
});

test('models retrieve by alias and file name', async () => {
  const byAlias = await client.models.retrieve('tiny');
  assert.equal(byAlias.id, 'tiny');
  assert.equal(byAlias.object, 'model');
  // The file is tiny-model.gguf: its base name names the same model, served as the alias.
  const byFile = await client.models.retrieve('tiny-model');
  assert.equal(byFile.id, 'tiny');
  const reply = await client.completions.create({
    model: 'tiny-model', prompt: 'x', max_tokens: 1,
  });
  assert.equal(reply.model, 'tiny');
});

test('response_format text is the default and accepted', async () => {
  const reply = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2,
    response_format: { type: 'text' },
  });
  assert.equal(reply.object, 'chat.completion');
});

test('n choices count the prompt once', async () => {
  const single = await client.completions.create({ model: 'tiny', prompt: 'hello', max_tokens: 2 });
  const double = await client.completions.create({
    model: 'tiny', prompt: 'hello', max_tokens: 2, n: 2,
  });
  assert.equal(double.choices.length, 2);
  assert.equal(double.usage.prompt_tokens, single.usage.prompt_tokens);
  checkUsage(double.usage);
});

test('HEAD on /health answers without a body', () => {
  const result = spawnSync('curl', ['-sS', '-I', `http://127.0.0.1:${port}/health`],
    { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /^HTTP\/1\.1 200/);
});

test('curl chat reply prints exact cost', () => {
  const body = JSON.stringify({
    model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0,
  });
  const raw = curl(['-H', 'Content-Type: application/json', '-d', body,
    `http://127.0.0.1:${port}/v1/chat/completions`]);
  const reply = JSON.parse(raw);
  checkUsage(reply.usage);
  const expected = expectedCost(reply.usage);
  assert.ok(raw.includes(`"total":${formatUsd(expected.total)},`), raw);
});

test('curl stream ends with DONE', () => {
  const body = JSON.stringify({ model: 'tiny', prompt: 'abc', max_tokens: 3, stream: true });
  const raw = curl(['-N', '-H', 'Content-Type: application/json', '-d', body,
    `http://127.0.0.1:${port}/v1/completions`]);
  assert.ok(raw.startsWith('data: {'), raw);
  assert.ok(raw.endsWith('data: [DONE]\n\n'), raw);
});

test('SIGTERM exits with status 0', async () => {
  server.kill('SIGTERM');
  const { code } = await serverExit;
  assert.equal(code, 0, serverLog);
  assert.match(serverLog, /msg="stopped"/);
});
