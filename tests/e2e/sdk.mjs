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

// In-band signatures: the SDKs must not notice the trailing SSE comment or the headers.
const inbandClient = new OpenAI({
  baseURL: `${signet}/v1`,
  apiKey: 'unused',
  maxRetries: 0,
  defaultHeaders: { 'x-signet-signature': 'in-band' },
});
let inbandText = '';
const inbandStream = await inbandClient.chat.completions.create({ model: 'smollm2', messages, stream: true, temperature: 0, max_tokens: 24 });
for await (const chunk of inbandStream) {
  inbandText += chunk.choices[0]?.delta?.content ?? '';
}
const { data: inbandPlain, response: inbandResponse } = await inbandClient.chat.completions
  .create({ model: 'smollm2', messages, temperature: 0, max_tokens: 24 })
  .withResponse();
const inband = {
  streamText: inbandText,
  plainText: inbandPlain.choices[0].message.content,
  recovered: verifyMessage(inbandResponse.headers.get('x-signet-text'), inbandResponse.headers.get('x-signet-signature')),
};

console.log(JSON.stringify({ attested: report.signing_address, stream: streamed, plain, inband }));
