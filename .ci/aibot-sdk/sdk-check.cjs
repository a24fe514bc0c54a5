// Drives Tencent's official AI bot SDK (@wecom/aibot-node-sdk, pinned in
// package-lock.json) against wecom/emulator's fake long-connection server.
// The Go test TestBotServerSpeaksOfficialSDK starts the fake, runs
//
//   node sdk-check.cjs WS_URL BOT_ID SECRET MODE
//
// and talks to this script through stdout lines:
//   READY       the SDK authenticated (aibot_subscribe acked)
//   WELCOMED    it answered the pushed enter_chat with replyWelcome
//   DONE        it answered the pushed text with three replyStream frames
//               (feedback on the first, finish on the last) and one
//               sendMessage markdown, every one acked with errcode 0
//   DISPLACED   the fake sent disconnected_event (another connection
//               subscribed); the script then exits 0
//   AUTHFAILED  (MODE=badsecret) the subscribe was refused; exits 0
// Anything unexpected exits non-zero. SDK logs go to stderr.
//
//   node sdk-check.cjs crypto < request.json
//
// cross-checks the Go crypto with the SDK's own: it reads
// {aeskey, media, token, encodingAESKey, reply, plain, timestamp, nonce}
// and prints {media, reply, replyOK, encrypt, signature}: media (base64)
// decrypted with the SDK's decryptFile, a Go passive reply opened with the
// SDK's WecomCrypto (receive id ""), and plain encrypted by the SDK for Go
// to open.
'use strict';

const sdk = require('@wecom/aibot-node-sdk');
const { WSClient } = sdk;

if (process.argv[2] === 'crypto') {
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => (input += d));
  process.stdin.on('end', () => {
    const req = JSON.parse(input);
    const media = sdk.decryptFile(Buffer.from(req.media, 'base64'), req.aeskey).toString('base64');
    const wc = new sdk.WecomCrypto(req.token, req.encodingAESKey, '');
    const r = JSON.parse(req.reply);
    const replyOK = wc.verifySignature(r.msgsignature, r.timestamp, r.nonce, r.encrypt);
    const reply = wc.decrypt(r.encrypt);
    const { encrypt, signature } = wc.encrypt(req.plain, req.timestamp, req.nonce);
    process.stdout.write(JSON.stringify({ media, reply, replyOK, encrypt, signature }) + '\n');
  });
  return;
}

const [url, botId, secret, mode = 'roundtrip'] = process.argv.slice(2);
if (!url || !botId || !secret) {
  console.error('usage: node sdk-check.cjs WS_URL BOT_ID SECRET [roundtrip|badsecret]');
  process.exit(2);
}

const say = (line) => process.stdout.write(line + '\n');
const fail = (why) => {
  console.error('sdk-check: ' + why);
  process.exit(1);
};
const log = (level) => (msg, ...args) => console.error(`[sdk ${level}] ${msg}`, ...args);
const logger = { debug: () => {}, info: log('info'), warn: log('warn'), error: log('error') };

setTimeout(() => fail('timed out'), 20000).unref();

const client = new WSClient({
  botId,
  secret,
  wsUrl: url,            // the SDK's documented override of the default endpoint
  heartbeatInterval: 100, // make the SDK ping often so the fake's ping acks are exercised
  maxReconnectAttempts: 0,
  maxAuthFailureAttempts: 0,
  logger,
});

let authenticated = 0;
client.on('authenticated', () => {
  authenticated++;
  if (authenticated > 1) fail('re-authenticated: the connection was not stable');
  if (mode === 'badsecret') fail('authenticated with a bad secret');
  say('READY');
});

client.on('error', (err) => {
  if (mode === 'badsecret' && /Authentication failed/.test(err.message)) {
    say('AUTHFAILED');
    client.disconnect();
    process.exit(0);
  }
  if (err.name === 'WSReconnectExhaustedError' || err.name === 'WSAuthFailureError') return;
  fail('SDK error: ' + err.message);
});

client.on('event.enter_chat', async (frame) => {
  try {
    await client.replyWelcome(frame, { msgtype: 'text', text: { content: '欢迎使用知识库助手' } });
    say('WELCOMED');
  } catch (e) {
    fail('replyWelcome: ' + JSON.stringify(e));
  }
});

client.on('message.text', async (frame) => {
  try {
    // Let a few heartbeats go by first.
    await new Promise((r) => setTimeout(r, 350));
    const sid = 'sdk-stream-1';
    const a = await client.replyStream(frame, sid, '第一段', false, undefined, { id: 'fb-sdk-1' });
    const b = await client.replyStream(frame, sid, '第一段\n\n第二段', false);
    const c = await client.replyStream(frame, sid, '第一段\n\n第二段\n\n**完**', true);
    for (const ack of [a, b, c]) {
      if (ack.errcode !== 0) fail('stream ack errcode ' + ack.errcode);
    }
    const d = await client.sendMessage(frame.body.from.userid, {
      msgtype: 'markdown',
      markdown: { content: '**主动消息** from the SDK' },
    });
    if (d.errcode !== 0) fail('send ack errcode ' + d.errcode);
    say('DONE');
  } catch (e) {
    fail('reply: ' + (e && e.message ? e.message : JSON.stringify(e)));
  }
});

client.on('event.disconnected_event', () => {
  say('DISPLACED');
  setTimeout(() => process.exit(0), 50);
});

client.connect();
