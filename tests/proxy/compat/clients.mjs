// clients.mjs URL: drive ollama-js and the OpenAI SDK through the proxy at
// URL, streamed and not, and print one JSON line of what they saw. Exit 1
// on any exception.
import { Ollama } from 'ollama';
import OpenAI from 'openai';

const url = process.argv[2];
const out = {};
const ollama = new Ollama({ host: url });

const chat = await ollama.chat({ model: 'llama3', messages: [{ role: 'user', content: 'hi' }] });
out.chat = chat.done === true && typeof chat.message.content === 'string';
let parts = 0, done = false;
for await (const p of await ollama.chat({ model: 'llama3', stream: true,
                                          messages: [{ role: 'user', content: 'hi' }] })) {
  parts++;
  done = p.done;
}
out.chat_stream_parts = parts;
out.chat_stream_done = done;
const gen = await ollama.generate({ model: 'llama3', prompt: 'hello' });
out.generate = gen.done === true;
const emb = await ollama.embed({ model: 'llama3', input: ['a', 'b'] });
out.embed = emb.embeddings.length;
const list = await ollama.list();
out.list = list.models.map((m) => m.name);
try {
  await ollama.chat({ model: 'nope', messages: [{ role: 'user', content: 'x' }] });
  out.missing = 'no error';
} catch (e) {
  out.missing = e.message;
}

const oa = new OpenAI({ baseURL: url + '/v1', apiKey: 'unused' });
const c = await oa.chat.completions.create({ model: 'llama3',
                                             messages: [{ role: 'user', content: 'hi' }] });
out.openai = c.choices[0].message.content.length > 0;
let deltas = 0, finish = null;
const s = await oa.chat.completions.create({ model: 'llama3', stream: true,
                                             messages: [{ role: 'user', content: 'hi' }] });
for await (const ch of s) {
  if (ch.choices.length && ch.choices[0].delta.content) deltas++;
  if (ch.choices.length && ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
}
out.openai_stream_deltas = deltas;
out.openai_finish = finish;
const e = await oa.embeddings.create({ model: 'llama3', input: 'x' });
out.openai_embed = e.data[0].embedding.length;
console.log(JSON.stringify(out));
