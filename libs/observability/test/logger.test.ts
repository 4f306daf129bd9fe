// What a service's log line shows of secrets: nothing. Fields named like secrets, a Redis
// client's failed command (AUTH password, stored record), secrets the config knows, URL
// passwords, bearer tokens and NAME=value pairs in messages are masked; the rest stays readable.
import { Writable } from 'node:stream';
import { expect, it } from 'vitest';
import { registerSecret } from '@kappa/config';
import { createLogger } from '../src/index.js';

const CMDLINE = 'mysql --password=hunter2-SECRET AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI-SECRET curl -H "Authorization: Bearer eyJhbGciOi.SECRET-sig"';

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { lines, stream };
}

it('masks a record command line quoted in an error message and in its cause', () => {
  const { lines, stream } = capture();
  const logger = createLogger('kappa-test', 'info', stream);
  const cause = new Error(`record 7 has a bad address; cmdline was ${CMDLINE}`);
  logger.error({ err: new Error(`batch failed: ${CMDLINE}`, { cause }) }, `handler failed on ${CMDLINE}`);
  const line = lines.join('');
  expect(line).not.toMatch(/hunter2-SECRET|wJalrXUtnFEMI-SECRET|eyJhbGciOi\.SECRET-sig/);
  expect(line).toContain('--password=***');
  expect(line).toContain('AWS_SECRET_ACCESS_KEY=***');
  expect(line).toContain('Bearer ***');
  expect(line).toContain('batch failed');
});

it('drops the arguments of a failed Redis command (ioredis puts AUTH passwords and records there)', () => {
  const { lines, stream } = capture();
  const logger = createLogger('kappa-test', 'info', stream);
  // The shape ioredis's DataHandler.returnError gives a ReplyError.
  const error = Object.assign(new Error('NOPERM this user has no permissions to run the set command'), {
    command: { name: 'set', args: ['kappa:rec:1', Buffer.from(CMDLINE), 'plain-secret-value-9'] },
  });
  const auth = Object.assign(new Error('WRONGPASS invalid username-password pair'), { command: { name: 'auth', args: ['kappa', 'pw-plain-7781'] } });
  logger.error({ err: error }, 'Redis unavailable');
  logger.error({ err: new Error('cannot connect', { cause: auth }) }, 'Redis down');
  const text = lines.join('');
  expect(text).not.toMatch(/plain-secret-value-9|pw-plain-7781|hunter2/);
  expect(text).toContain('"name":"set"');
  expect(text).toContain('NOPERM');
  expect(text).toContain('WRONGPASS');
});

it('masks fields named like secrets and values the config marked secret, wherever they appear', () => {
  registerSecret('nats-pw-known-4411');
  const { lines, stream } = capture();
  const logger = createLogger('kappa-test', 'info', stream);
  logger.info({ auth: { user: 'kappa', pass: 'x-pass-1' }, token: 'x-token-2', server: 'nats://kappa:url-pw-3@nats:4222' }, 'connected with nats-pw-known-4411');
  const line = JSON.parse(lines.join('')) as Record<string, unknown>;
  expect(JSON.stringify(line)).not.toMatch(/x-pass-1|x-token-2|url-pw-3|nats-pw-known-4411/);
  expect(line['auth']).toEqual({ user: 'kappa', pass: '[redacted]' });
  expect(line['server']).toBe('nats://kappa:***@nats:4222');
  expect(line['msg']).toBe('connected with ***');
});

it('leaves ordinary lines unchanged', () => {
  const { lines, stream } = capture();
  const logger = createLogger('kappa-test', 'info', stream);
  logger.info({ subject: 'kappa.flow.tagged', records: 12, cmdline: 'nginx -g daemon off;' }, 'published 12 records to kappa.flow.tagged');
  const line = JSON.parse(lines.join('')) as Record<string, unknown>;
  expect(line).toMatchObject({ subject: 'kappa.flow.tagged', records: 12, cmdline: 'nginx -g daemon off;', msg: 'published 12 records to kappa.flow.tagged' });
});
