// Secrets the config knows become masked everywhere redactSecrets runs (logs, /metrics, errors).
import { expect, it } from 'vitest';
import { ConfigError, list, parseConfig, redactSecrets, string, url } from '../src/index.js';

const table = {
  natsUrl: list({ description: 'urls', default: ['nats://127.0.0.1:4222'] }),
  natsPassword: string({ description: 'password', secret: true }),
  redisUrl: url({ description: 'redis', schemes: ['redis'] }),
  name: string({ description: 'a name' }),
};

it('masks the values of secret options, and URL passwords of any option, once parsed', () => {
  parseConfig(table, {
    argv: ['--nats-password', 'flag-secret-81', '--nats-url', 'nats://kappa:list-url-pw-82@a:4222', '--redis-url', 'redis://:url-pw-83@r:6379', '--name', 'ordinary-84'],
    env: {},
  });
  const text = 'flag-secret-81 / list-url-pw-82 / url-pw-83 / ordinary-84 / "flag-secret-81" / flag-secret-81'.toString();
  expect(redactSecrets(text)).toBe('*** / *** / *** / ordinary-84 / "***" / ***');
});

it('masks URL passwords, bearer tokens and NAME=value secrets it was never told about', () => {
  expect(redactSecrets('connect nats://u:p4ss-91@host:4222 failed')).toBe('connect nats://u:***@host:4222 failed');
  expect(redactSecrets('Authorization: Bearer abcdefgh.ijk-92')).toBe('Authorization: Bearer ***');
  expect(redactSecrets('app --db-password=x93 API_TOKEN=x94')).toBe('app --db-password=*** API_TOKEN=***');
  expect(redactSecrets('{"msg":"published 3 records","subject":"kappa.flow.tagged"}')).toBe('{"msg":"published 3 records","subject":"kappa.flow.tagged"}');
});

it('a bad value of a URL option is quoted without its password', () => {
  const bad = { redisUrl: url({ description: 'redis', schemes: ['redis'] }) };
  expect(() => parseConfig(bad, { argv: ['--redis-url', 'http://u:pw-bad-95@r'], env: {} })).toThrow(ConfigError);
  try {
    parseConfig(bad, { argv: ['--redis-url', 'http://u:pw-bad-95@r'], env: {} });
  } catch (error) {
    expect((error as Error).message).not.toContain('pw-bad-95');
    expect((error as Error).message).toContain('http://u:***@r');
  }
});

it('an option named like a secret is treated as one even when the table does not say so', () => {
  parseConfig({ grpcToken: string({ description: 'bearer token of the gRPC services' }) }, { argv: ['--grpc-token', 'unmarked-token-96'], env: {} });
  expect(redactSecrets('sent unmarked-token-96')).toBe('sent ***');
});
