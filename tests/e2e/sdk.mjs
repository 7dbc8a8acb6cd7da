// The official OpenAI JS SDK through signet, streamed and not, with each signature recovered
// by ethers. Prints one JSON object; the pytest tier checks it.
import OpenAI from 'openai';
import { verifyMessage } from 'ethers';

const signet = process.argv[2];
const client = new OpenAI({ baseURL: `${signet}/v1`, apiKey: 'unused', maxRetries: 0 });
const messages = [{ role: 'user', content: 'Name three colours.' }];

async function receiptFor(id) {
  const answer = await fetch(`${signet}/v1/signature/${id}`);
  if (!answer.ok) throw new Error(`signature ${id}: HTTP ${answer.status}`);
  const receipt = await answer.json();
  return { recovered: verifyMessage(receipt.text, receipt.signature), signing_address: receipt.signing_address };
}

const report = await (await fetch(`${signet}/v1/attestation/report`)).json();

let id;
let text = '';
const stream = await client.chat.completions.create({ model: 'smollm2', messages, stream: true, temperature: 0, max_tokens: 24 });
for await (const chunk of stream) {
  id ??= chunk.id;
  text += chunk.choices[0]?.delta?.content ?? '';
}
const streamed = { id, text, ...(await receiptFor(id)) };

const completion = await client.chat.completions.create({ model: 'smollm2', messages, temperature: 0, max_tokens: 24 });
const plain = { id: completion.id, text: completion.choices[0].message.content, ...(await receiptFor(completion.id)) };

console.log(JSON.stringify({ attested: report.signing_address, stream: streamed, plain }));
