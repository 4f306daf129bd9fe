import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, boolean, duration, integer, list, oneOf, parseConfig, regex, renderHelp, string, url } from '../src/index.js';

const table = {
  interval: duration({ description: 'drain interval', default: '10s', minMs: 100 }),
  node: string({ description: 'node name' }),
  stdout: boolean({ description: 'print records' }),
  metricsPort: integer({ description: 'metrics port', default: 9400, min: 0, max: 65535 }),
  output: oneOf(['table', 'json'] as const, { description: 'format', default: 'table' }),
  capture: regex({ description: 'interfaces', default: 'en.*|veth.*|eth.*' }),
  nats: url({ description: 'NATS', default: 'nats://127.0.0.1:4222', schemes: ['nats', 'tls'] }),
  ports: list({ description: 'ports', default: [], item: /^\d+$/ }),
};

describe('parseConfig', () => {
  it('applies defaults, then file, then environment, then flags', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kappa-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ node: 'from-file', metricsPort: 1, 'interval': '1s' }));
    const config = parseConfig(table, {
      argv: ['--config', file, '--interval=2s', '--stdout', '--ports', '80,443'],
      env: { KAPPA_METRICS_PORT: '9500', KAPPA_OUTPUT: 'json' },
    });
    expect(config).toMatchObject({ interval: 2000, node: 'from-file', stdout: true, metricsPort: 9500, output: 'json', ports: ['80', '443'] });
    expect(config.capture.test('veth12')).toBe(true);
    expect(config.capture.test('lo')).toBe(false);
    expect(config.nats.port).toBe('4222');
  });

  it('reads every flag from its KAPPA_ variable', () => {
    expect(parseConfig(table, { argv: [], env: { KAPPA_INTERVAL: '500ms', KAPPA_STDOUT: 'true' } })).toMatchObject({ interval: 500, stdout: true });
  });

  it.each([
    [['--interval=abc'], /invalid --interval "abc": expected a duration like 500ms, 10s or 2m/],
    [['--interval=10ms'], /at least 100ms/],
    [['--metrics-port', '70000'], /invalid --metrics-port "70000": expected an integer from 0 to 65535/],
    [['--output=yaml'], /expected one of table, json/],
    [['--capture=('], /expected a regular expression/],
    [['--nats=http://x'], /expected a URL like nats:\/\/host:port/],
    [['--bogus'], /unknown flag --bogus/],
    [['stray'], /invalid argument "stray"/],
  ])('rejects %j with one line naming the flag', (argv, message) => {
    expect(() => parseConfig(table, { argv, env: {} })).toThrow(message);
  });

  it('names the variable when the bad value came from the environment', () => {
    expect(() => parseConfig(table, { argv: [], env: { KAPPA_METRICS_PORT: 'x' } })).toThrow(/invalid KAPPA_METRICS_PORT "x"/);
  });

  it('reports a missing required option', () => {
    const error = (() => {
      try {
        parseConfig(table, { argv: [], env: {} }, ['node']);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(/missing --node \(or KAPPA_NODE\)/);
  });

  it('prints help with flag, variable and default for every option', () => {
    const help = renderHelp('kappa-test', 'Tests things.', table);
    expect(help).toContain('--metrics-port  (KAPPA_METRICS_PORT)');
    expect(help).toContain('[default: en.*|veth.*|eth.*]');
    expect(help).toContain('[default: 10000]');
  });
});
