// clients.mjs URL: drive ollama-js and the OpenAI SDK through the proxy at
// URL, streamed and not, and print one JSON line of what they saw (the
// embeddings in full, for the caller to compare with the backend's).
// clients.mjs URL auth KEY WRONG: the same clients with a good key, a wrong
// key and (ollama-js) no key; each call's outcome, error or not, is printed.
// clients.mjs URL manage: ollama-js pull (with its progress) and delete.
// Exit 1 on any exception not caught on purpose.
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

const modes = { basic, auth, manage };
if (!url || !modes[mode] || (mode === 'auth' && !(key && wrong))) {
  console.error('usage: node clients.mjs URL [basic | auth KEY WRONG | manage]');
  process.exit(2);
}
console.log(JSON.stringify(await modes[mode]()));
