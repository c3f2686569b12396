// clients.mjs URL: drive ollama-js and the OpenAI SDK through the proxy at
// URL, streamed and not, and print one JSON line of what they saw (the
// embeddings in full, for the caller to compare with the backend's).
// clients.mjs URL auth KEY WRONG: the same clients with a good key, a wrong
// key and (ollama-js) no key; each call's outcome, error or not, is printed.
// clients.mjs URL manage: ollama-js pull (with its progress) and delete.
// clients.mjs URL every KEY ADMIN: the clients of every wire format, KEY a
// user's key, ADMIN an admin's: the Anthropic SDK (its key as x-api-key),
// the OpenAI SDK's responses.create and models.retrieve, ollama-js create
// with files after the blob upload done as the ollama CLI does it (HEAD,
// then POST of the file as a stream: chunked), each answer's text and
// usage, each library's error for an unknown model.
// clients.mjs URL cut KEY: the same SDKs' streams cut by the proxy
// (timeouts.idle_s): what each library reports.
// Exit 1 on any exception not caught on purpose.
import { createHash } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import OpenAI from 'openai';

const [url, mode = 'basic', key, wrong] = process.argv.slice(2);
const msgs = [{ role: 'user', content: 'hi' }];

async function ollamaChat(ollama) {
  const r = await ollama.chat({ model: 'llama3', messages: msgs });
  return { done: r.done === true, content: typeof r.message.content === 'string' };
}

async function ollamaStream(ollama) {
  let parts = 0, done = false;
  for await (const p of await ollama.chat({ model: 'llama3', stream: true, messages: msgs })) {
    parts++;
    done = p.done;
  }
  return { parts, done };
}

async function openaiChat(oa) {
  const c = await oa.chat.completions.create({ model: 'llama3', messages: msgs });
  return { content: c.choices[0].message.content.length > 0 };
}

async function openaiStream(oa) {
  let deltas = 0, finish = null;
  const s = await oa.chat.completions.create({ model: 'llama3', stream: true, messages: msgs });
  for await (const ch of s) {
    if (ch.choices.length && ch.choices[0].delta.content) deltas++;
    if (ch.choices.length && ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
  }
  return { deltas, finish };
}

// What a call ended with: its result, or what the library's error says.
async function outcome(fn) {
  try {
    return { ok: true, ...(await fn()) };
  } catch (e) {
    return {
      ok: false,
      name: e.constructor.name,                    // ResponseError, AuthenticationError
      authError: e instanceof OpenAI.AuthenticationError,
      status: e.status ?? e.status_code ?? null,   // OpenAI: status; ollama-js: status_code
      message: String(e.message),
      error: e.error ?? null,                      // ollama-js: text; OpenAI: {message, type}
      type: e.type ?? null,
    };
  }
}

async function basic() {
  const out = {};
  const ollama = new Ollama({ host: url });
  const ch = await ollamaChat(ollama);
  out.chat = ch.done && ch.content;
  const st = await ollamaStream(ollama);
  out.chat_stream_parts = st.parts;
  out.chat_stream_done = st.done;
  const gen = await ollama.generate({ model: 'llama3', prompt: 'hello' });
  out.generate = gen.done === true;
  const emb = await ollama.embed({ model: 'llama3', input: ['a', 'b'] });
  out.embed = emb.embeddings;
  const list = await ollama.list();
  out.list = list.models.map((m) => m.name);
  try {
    await ollama.chat({ model: 'nope', messages: [{ role: 'user', content: 'x' }] });
    out.missing = 'no error';
  } catch (e) {
    out.missing = e.message;
  }

  const oa = new OpenAI({ baseURL: url + '/v1', apiKey: 'unused' });
  out.openai = (await openaiChat(oa)).content;
  const os = await openaiStream(oa);
  out.openai_stream_deltas = os.deltas;
  out.openai_finish = os.finish;
  // The SDK's default asks for base64 and decodes the float32 bytes itself.
  const e = await oa.embeddings.create({ model: 'llama3', input: ['x', 'hello world'] });
  out.openai_embed = e.data.map((d) => Array.from(d.embedding));
  out.openai_embed_index = e.data.map((d) => d.index);
  const one = await oa.embeddings.create({ model: 'llama3', input: 'x' });
  out.openai_embed_one = Array.from(one.data[0].embedding);
  const f = await oa.embeddings.create({ model: 'llama3', input: ['x', 'hello world'],
                                         encoding_format: 'float' });
  out.openai_embed_float = f.data.map((d) => d.embedding);
  return out;
}

async function auth() {
  const out = {};
  const bearer = (k) => new Ollama({ host: url, headers: { Authorization: 'Bearer ' + k } });
  const oa = (k) => new OpenAI({ baseURL: url + '/v1', apiKey: k, maxRetries: 0 });
  const clients = {
    ollama_good: bearer(key), ollama_wrong: bearer(wrong), ollama_none: new Ollama({ host: url }),
  };
  for (const [name, c] of Object.entries(clients)) {
    out[name] = { chat: await outcome(() => ollamaChat(c)),
                  stream: await outcome(() => ollamaStream(c)) };
  }
  for (const [name, c] of Object.entries({ openai_good: oa(key), openai_wrong: oa(wrong) })) {
    out[name] = { chat: await outcome(() => openaiChat(c)),
                  stream: await outcome(() => openaiStream(c)) };
  }
  return out;
}

// Model management through the proxy: a pull with its progress, then a
// delete, as `ollama pull` and `ollama rm` do them with ollama-js.
async function manage() {
  const ollama = new Ollama({ host: url });
  const progress = [];
  for await (const p of await ollama.pull({ model: 'qwen2.5:7b', stream: true })) {
    progress.push({ status: p.status, backend: p.backend ?? null });
  }
  const listed = (await ollama.list()).models.map((m) => m.name);
  const deleted = await ollama.delete({ model: 'qwen2.5:7b' });
  const after = (await ollama.list()).models.map((m) => m.name);
  return { progress, listed, deleted: deleted.status ?? 'ok', after };
}

// ---- every wire format ----

const PROMPT = 'Tell me about Lisbon';

// An SDK error as the library shaped it: its class, status and the body.
function errorOf(e) {
  return { name: e.constructor.name, status: e.status ?? null, error: e.error ?? null,
           notFound: e instanceof Anthropic.NotFoundError || e instanceof OpenAI.NotFoundError };
}

async function anthropicCalls(an) {
  const out = {};
  const m = await an.messages.create({ model: 'alpha', max_tokens: 64,
                                       messages: [{ role: 'user', content: PROMPT }] });
  out.text = m.content.map((c) => c.text).join('');
  out.usage = m.usage;
  out.stop = m.stop_reason;
  let text = '', usage = null, events = [];
  const s = await an.messages.create({ model: 'alpha', max_tokens: 64, stream: true,
                                       messages: [{ role: 'user', content: PROMPT }] });
  for await (const ev of s) {
    events.push(ev.type);
    if (ev.type === 'content_block_delta') text += ev.delta.text;
    if (ev.type === 'message_delta') usage = ev.usage;
  }
  out.stream_text = text;
  out.stream_usage = usage;
  out.stream_events = [...new Set(events)];
  try {
    await an.messages.create({ model: 'nope', max_tokens: 8,
                               messages: [{ role: 'user', content: 'x' }] });
    out.missing = 'no error';
  } catch (e) {
    out.missing = errorOf(e);
  }
  return out;
}

async function responsesCalls(oa) {
  const out = {};
  const r = await oa.responses.create({ model: 'alpha', input: PROMPT });
  out.text = r.output_text;
  out.usage = r.usage;
  out.status = r.status;
  let text = '', usage = null, types = [];
  const s = await oa.responses.create({ model: 'alpha', input: PROMPT, stream: true });
  for await (const ev of s) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') usage = ev.response.usage;
  }
  out.stream_text = text;
  out.stream_usage = usage;
  out.stream_last = types[types.length - 1];
  try {
    await oa.responses.create({ model: 'nope', input: 'x' });
    out.missing = 'no error';
  } catch (e) {
    out.missing = errorOf(e);
  }
  const mod = await oa.models.retrieve('alpha');
  out.model = { id: mod.id, object: mod.object, owned_by: mod.owned_by,
                created: typeof mod.created };
  try {
    await oa.models.retrieve('nope');
    out.model_missing = 'no error';
  } catch (e) {
    out.model_missing = errorOf(e);
  }
  return out;
}

// A blob uploaded as the ollama CLI does it (cmd/cmd.go, api.Client.CreateBlob):
// HEAD, and if the fleet lacks it, POST of the file as a stream (no length:
// chunked).
async function uploadBlob(admin, data) {
  const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
  const h = { Authorization: 'Bearer ' + admin };
  const blobUrl = url + '/api/blobs/' + digest;
  const first = (await fetch(blobUrl, { method: 'HEAD', headers: h })).status;
  let post = null;
  if (first === 404) {
    const body = new ReadableStream({
      start(c) {
        for (let i = 0; i < data.length; i += 1 << 20) c.enqueue(data.subarray(i, i + (1 << 20)));
        c.close();
      },
    });
    const r = await fetch(blobUrl, { method: 'POST', headers: h, body, duplex: 'half' });
    post = r.status;
    await r.arrayBuffer();
  }
  const after = (await fetch(blobUrl, { method: 'HEAD', headers: h })).status;
  return { digest, first, post, after };
}

async function createCalls(admin) {
  const data = Buffer.concat([Buffer.from('GGUF'),
                              createHash('sha512').update('made').digest()]);
  const big = Buffer.concat(Array(1 << 17).fill(data)); // ~8.5 MB
  const up = await uploadBlob(admin, big);
  const ollama = new Ollama({ host: url, headers: { Authorization: 'Bearer ' + admin } });
  const statuses = [];
  for await (const p of await ollama.create({ model: 'made', files: { 'model.gguf': up.digest },
                                              stream: true })) {
    statuses.push(p.status);
  }
  const listed = (await ollama.list()).models.map((m) => m.name);
  const gen = await ollama.generate({ model: 'made', prompt: 'hi' });
  return { upload: up, statuses, listed, generated: gen.done === true };
}

async function every() {
  const an = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const oa = new OpenAI({ baseURL: url + '/v1', apiKey: key, maxRetries: 0 });
  return { anthropic: await anthropicCalls(an), responses: await responsesCalls(oa),
           create: await createCalls(wrong) };
}

// Streams the proxy cuts after their head: what each library makes of it.
async function cut() {
  const out = {};
  const an = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const oa = new OpenAI({ baseURL: url + '/v1', apiKey: key, maxRetries: 0 });
  const run = async (name, fn) => {
    const seen = [];
    try {
      await fn(seen);
      out[name] = { threw: false, seen };
    } catch (e) {
      out[name] = { threw: true, seen, ...errorOf(e), message: String(e.message) };
    }
  };
  await run('anthropic', async (seen) => {
    const s = await an.messages.create({ model: 'alpha', max_tokens: 64, stream: true,
                                         messages: [{ role: 'user', content: PROMPT }] });
    for await (const ev of s) seen.push(ev.type);
  });
  await run('responses', async (seen) => {
    const s = await oa.responses.create({ model: 'alpha', input: PROMPT, stream: true });
    for await (const ev of s) {
      seen.push(ev.type);
      if (ev.type === 'response.failed') seen.push(ev.response.error);
    }
  });
  await run('chat', async (seen) => {
    const s = await oa.chat.completions.create({ model: 'alpha', stream: true,
                                                 messages: [{ role: 'user', content: PROMPT }] });
    for await (const ch of s) seen.push(ch.object);
  });
  return out;
}

const modes = { basic, auth, manage, every, cut };
if (!url || !modes[mode] || (mode === 'auth' && !(key && wrong)) ||
    (mode === 'every' && !(key && wrong)) || (mode === 'cut' && !key)) {
  console.error('usage: node clients.mjs URL [basic | auth KEY WRONG | manage | every KEY ADMIN' +
                ' | cut KEY]');
  process.exit(2);
}
console.log(JSON.stringify(await modes[mode]()));
