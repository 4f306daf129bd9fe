// Redaction rules: every documented form, and the things that must stay readable.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '@kappa/config';
import { enricherOptions } from '../src/config.js';
import { redactCmdline } from '../src/redact.js';

const on = { enabled: true, extraPatterns: [] };

describe('redactCmdline', () => {
  const cases: [string, string[], string][] = [
    ['--password=value', ['app', '--password=hunter2', '--port=5432'], 'app --password=*** --port=5432'],
    ['--password value', ['app', '--password', 'hunter2', '-v'], 'app --password *** -v'],
    ['a flag with no value keeps the next flag', ['mysql', '--password', '--host', 'db'], 'mysql --password --host db'],
    ['NAME=value environment-style', ['env', 'PGPASSWORD=hunter2', 'psql'], 'env PGPASSWORD=*** psql'],
    ['AWS secret key', ['env', 'AWS_SECRET_ACCESS_KEY=abc', 'AWS_REGION=eu'], 'env AWS_SECRET_ACCESS_KEY=*** AWS_REGION=eu'],
    ['--api-key, --token, --client-secret', ['x', '--api-key', 'k1', '--token=t1', '--client-secret', 's1'], 'x --api-key *** --token=*** --client-secret ***'],
    ['-pX for mysql', ['/usr/bin/mysql', '-u', 'root', '-phunter2', 'db'], '/usr/bin/mysql -u root -p*** db'],
    ['mysqldump -p db: -p prompts, db is the database', ['mysqldump', '-p', 'shop', 'orders'], 'mysqldump -p shop orders'],
    ['-p is a port for others', ['docker', 'run', '-p', '8080:80', 'nginx'], 'docker run -p 8080:80 nginx'],
    ['redis-cli -a', ['redis-cli', '-a', 'hunter2', 'ping'], 'redis-cli -a *** ping'],
    ['sshpass -p', ['sshpass', '-phunter2', 'ssh', 'host'], 'sshpass -p*** ssh host'],
    ['curl -u user:pass', ['curl', '-u', 'bob:hunter2', 'http://x/'], 'curl -u bob:*** http://x/'],
    ['curl -uuser:pass', ['curl', '-ubob:hunter2', 'http://x/'], 'curl -ubob:*** http://x/'],
    ['curl --user user:pass', ['curl', '--user', 'bob:hunter2', 'http://x/'], 'curl --user bob:*** http://x/'],
    ['curl --user=user:pass', ['curl', '--user=bob:hunter2', 'http://x/'], 'curl --user=bob:*** http://x/'],
    ['curl -u user alone', ['curl', '-u', 'bob', 'http://x/'], 'curl -u bob http://x/'],
    ['curl Authorization header', ['curl', '-H', 'Authorization: Bearer abc.def', 'http://x/'], 'curl -H Authorization: *** http://x/'],
    ['URL with user:pass@', ['psql', 'postgres://app:hunter2@db:5432/x'], 'psql postgres://app:***@db:5432/x'],
    ['redis URL with empty user', ['worker', '--broker=redis://:hunter2@redis:6379/0'], 'worker --broker=redis://:***@redis:6379/0'],
    ['sh -c string', ['sh', '-c', 'PGPASSWORD=hunter2 psql -h db; mysql -phunter2 x'], 'sh -c PGPASSWORD=*** psql -h db; mysql -p*** x'],
    ['sh -c with quoted value', ['bash', '-c', 'PGPASSWORD="hunter 2" psql'], 'bash -c PGPASSWORD="***" psql'],
    ['script named curl run by sh', ['/bin/sh', '/tmp/t/curl', '-u', 'bob:hunter2'], '/bin/sh /tmp/t/curl -u bob:***'],
    ['nothing secret stays as is', ['nginx', '-g', 'daemon off;'], 'nginx -g daemon off;'],
    ['an argv word NAME=value with spaces in the value', ['docker', 'run', '-e', 'DB_PASSWORD=two words', 'img'], 'docker run -e DB_PASSWORD=*** img'],
    ['java system property', ['java', '-Djavax.net.ssl.keyStorePassword=hunter2', '-jar', 'a.jar'], 'java -Djavax.net.ssl.keyStorePassword=*** -jar a.jar'],
  ];
  for (const [name, args, expected] of cases) {
    it(`redacts ${name}`, () => {
      const out = redactCmdline(args, on);
      expect(out).toBe(expected);
    });
  }

  it('never lets hunter2 through in any documented form', () => {
    const forms = [
      ['x', '--password=hunter2'],
      ['x', '--password', 'hunter2'],
      ['env', 'PGPASSWORD=hunter2'],
      ['curl', '-u', 'bob:hunter2'],
      ['mysql', '-phunter2'],
      ['mysql', '--password', 'hunter2'],
      ['sh', '-c', 'curl -u bob:hunter2 http://x && PGPASSWORD=hunter2 psql --password=hunter2'],
      ['x', 'https://bob:hunter2@example.com/'],
    ];
    for (const args of forms) expect(redactCmdline(args, on)).not.toContain('hunter2');
  });

  it('keeps quoted program text that splits into itself, instead of recursing forever', () => {
    expect(redactCmdline(['python3', '-c', "print('hello world')"])).toBe("python3 -c print('hello world')");
    expect(redactCmdline(['sh', '-c', `bash -c "sh -c 'curl -u bob:hunter2 x'"`])).not.toContain('hunter2');
  });

  it('leaves the command line alone when redaction is off', () => {
    expect(redactCmdline(['x', '--password=hunter2'], { enabled: false, extraPatterns: [] })).toBe('x --password=hunter2');
  });

  it('applies extra patterns, replacing only capture groups when there are some', () => {
    const rules = { enabled: true, extraPatterns: [/--license (\S+)/, /sk-[a-z0-9]+/] };
    expect(redactCmdline(['app', '--license', 'ABC-123', 'sk-abc123'], rules)).toBe('app --license *** ***');
  });

  it('takes its rules from the flags: --redact-pattern with \\, inside a pattern, --no-redact, --redact=false', () => {
    const parse = (...argv: string[]) => parseConfig(enricherOptions, { argv, env: {} });
    const config = parse('--redact-pattern=--license (\\S+),sk-[a-z0-9]{3\\,}');
    expect(config.redact && !config.noRedact).toBe(true);
    expect(config.redactPattern.map((r) => r.source)).toEqual(['--license (\\S+)', 'sk-[a-z0-9]{3,}']);
    expect(redactCmdline(['app', '--license', 'L-1', 'sk-abc123'], { enabled: true, extraPatterns: config.redactPattern })).toBe('app --license *** ***');
    expect(parse('--no-redact').noRedact).toBe(true);
    expect(parse('--redact=false').redact).toBe(false);
    expect(() => parse('--redact-pattern=(unclosed')).toThrow(/--redact-pattern/);
  });
});
