// Command-line redaction, applied before a record leaves the node: values of secret-looking
// names (flags, NAME=value, nested key=value, URL query parameters, JSON keys, headers),
// user:pass in URLs and curl's -u, password flags and positionals of common tools, and
// well-known token formats wherever they appear.
// Rules are documented in apps/process-enricher/README.md; keep the two in step.

export const REDACTED = '***';

export interface RedactionRules {
  enabled: boolean;
  /** Extra patterns: a match is replaced by ***, or only its capture groups when it has some. */
  extraPatterns: readonly RegExp[];
}

export const defaultRedaction: RedactionRules = { enabled: true, extraPatterns: [] };

// ---- which names hold secrets ----

/** Secret wherever it appears in a name (separators removed): `PGPASSWORD`, `X-Amz-Credential`. */
const secretAnywhere = /passw|passphrase|passcode|secret|credential|creds|cookie|bearer|jwt|signature|privatekey|apikey/;
/** A name ending in one of these words names where a secret is or how it behaves, not the secret:
 *  `--password-file /p`, `--password-stdin`, `--secret-name db`, `--token-ttl 1h`, `keyStore=/p`. */
const notTheSecret = new Set([
  'file', 'files', 'path', 'dir', 'directory', 'stdin', 'env', 'name', 'names', 'timeout', 'ttl', 'expiration', 'expiry', 'expires',
  'duration', 'lifetime', 'length', 'len', 'size', 'mode', 'type', 'policy', 'format', 'algorithm', 'algorithms', 'url', 'uri',
  'endpoint', 'version', 'count', 'limit', 'enabled', 'disabled', 'required', 'checking', 'jar', 'store', 'prefix', 'suffix',
  'location', 'helper', 'provider', 'method', 'plugin', 'ref', 'host', 'port', 'user', 'username', 'level', 'scope', 'scopes',
  'issuer', 'audience', 'strategy', 'kind', 'field', 'warning', 'header',
]);
/** `key` next to one of these is a database or crypto term, not a secret: `--primary-key id`. */
const keyContexts = new Set(['public', 'primary', 'foreign', 'partition', 'sort', 'range', 'hash', 'shard', 'host']);
const notSecretWords = new Set(['bypass', 'compass', 'surpass', 'monkey', 'hotkey', 'turkey', 'hockey', 'jockey', 'donkey']);
/** Values that cannot be a secret worth hiding (`-o PasswordAuthentication=no`). */
const harmlessValues = new Set(['', 'yes', 'no', 'true', 'false', 'on', 'off', 'none', 'null']);

/** `keyStorePassword` → key, store, password; `X-Amz-Signature` → x, amz, signature. */
function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

export function isSecretName(name: string): boolean {
  const words = nameWords(name);
  const last = words.at(-1);
  if (last === undefined) return false;
  const joined = words.join('');
  // $PWD and $OLDPWD are directories; --no-auth, --no-password are switches.
  if (joined === 'pwd' || joined === 'oldpwd' || words[0] === 'no') return false;
  if (notTheSecret.has(last)) return false;
  if (secretAnywhere.test(joined)) return true;
  if (words.some((w) => keyContexts.has(w))) return false;
  return words.some(
    (w) =>
      !notSecretWords.has(w) &&
      (w.endsWith('pass') ||
        w.endsWith('pwd') ||
        w.endsWith('token') ||
        w.endsWith('key') ||
        w === 'sig' ||
        w.startsWith('session') ||
        w.endsWith('sessid') ||
        // auth, authz, authtoken, authorization — not author, authors, authored
        (w.startsWith('auth') && !/^author(s|ed|ship)?$/.test(w))),
  );
}

function unquote(text: string): string {
  return /^(['"])[\s\S]*\1$/.test(text) ? text.slice(1, -1) : text;
}

function harmless(value: string): boolean {
  return harmlessValues.has(unquote(value).toLowerCase());
}

/** The secret replaced, its quotes kept: `'x'` → `'***'`. */
function hide(word: string): string {
  const quoted = /^(['"])[\s\S]*\1$/.exec(word);
  return quoted ? `${quoted[1]}${REDACTED}${quoted[1]}` : REDACTED;
}

// ---- tools ----

/** Short flags whose value is a password. `glued`: only `-pX` is a password (mysql's `-p db`
 *  prompts and `db` is the database); `any`: `-pX` and `-p X`. Keyed by tool, or tool+subcommand. */
const toolSecretFlags = new Map<string, { flags: readonly string[]; glued: boolean }>();
for (const tool of ['mysql', 'mysqldump', 'mysqladmin', 'mysqlimport', 'mysqlshow', 'mysqlcheck', 'mysqlpump', 'mysqlsh', 'mysqlbinlog', 'mariadb', 'mariadb-dump', 'mariadb-admin', 'mariadb-import', 'mariadb-check']) {
  toolSecretFlags.set(tool, { flags: ['p'], glued: true });
}
for (const tool of ['mongo', 'mongosh', 'mongodump', 'mongorestore', 'mongoexport', 'mongoimport', 'sshpass']) toolSecretFlags.set(tool, { flags: ['p'], glued: false });
toolSecretFlags.set('zip', { flags: ['P'], glued: false });
toolSecretFlags.set('unzip', { flags: ['P'], glued: false });
toolSecretFlags.set('7z', { flags: ['p'], glued: true });
toolSecretFlags.set('redis-cli', { flags: ['a'], glued: false });
for (const tool of ['ldapsearch', 'ldapadd', 'ldapmodify', 'ldapdelete', 'ldappasswd', 'ldapwhoami']) toolSecretFlags.set(tool, { flags: ['w'], glued: false });
toolSecretFlags.set('openssl', { flags: ['k'], glued: false });
// `<tool> login -p x`: a registry or cloud password (`docker run -p 80:80` is a port).
for (const tool of ['docker', 'podman', 'buildah', 'skopeo', 'nerdctl', 'helm', 'oras', 'az', 'crane']) toolSecretFlags.set(`${tool} login`, { flags: ['p'], glued: false });

/** Tools whose user flag takes `user:password`. */
const userPassFlags = new Map<string, readonly string[]>([
  ['curl', ['-u', '--user', '-U', '--proxy-user']],
  ['http', ['-a', '--auth']],
  ['https', ['-a', '--auth']],
  ['xh', ['-a', '--auth']],
]);

const shells = new Set(['sh', 'bash', 'dash', 'zsh', 'ash', 'ksh', 'mksh', 'busybox', 'su', 'fish', 'csh', 'tcsh']);
/** Tools with positional rules of their own (see redactTokens). */
const positionalTools = new Set(['htpasswd', 'vault', 'redis-cli']);
const knownTools = new Set([...toolSecretFlags.keys()].map((key) => key.split(' ')[0]!).concat([...userPassFlags.keys()], [...shells], [...positionalTools]));

// ---- text rules: URLs, key=value pairs, JSON, headers, token formats ----

const urlUserinfo = /([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)([^/\s@'"]*)@/g;
/** Schemes whose userinfo without a password is still a credential (`https://ghp_x@github.com`). */
const tokenAsUserSchemes = /^(https?|wss?|ftps?|git\+https?):\/\/$/i;
const wellKnownTokens = new RegExp(
  [
    'gh[pousr]_[A-Za-z0-9]{16,}', 'github_pat_[A-Za-z0-9_]{20,}', 'glpat-[A-Za-z0-9_-]{16,}', 'xox[abposr]-[A-Za-z0-9-]{10,}',
    '(?:hvs|hvb|hvr)\\.[A-Za-z0-9_-]{20,}', 's\\.[A-Za-z0-9]{24}(?![A-Za-z0-9])', 'sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}',
    'npm_[A-Za-z0-9]{30,}', 'AKIA[0-9A-Z]{16}', 'AIza[0-9A-Za-z_-]{30,}',
    'eyJ[A-Za-z0-9_-]{4,}\\.eyJ[A-Za-z0-9_-]{4,}\\.[A-Za-z0-9_-]{4,}',
  ]
    .map((p) => `(?<![A-Za-z0-9_])${p}`)
    .join('|'),
  'g',
);
const jsonPair = /(["'])([A-Za-z_$][\w$.-]*)\1(\s*:\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|-?\d[\w.+-]*)/g;
/** key=value inside a word: after the start, a separator or another `=`. */
const pairStart = /(^|[?&;,=\s"'({])([A-Za-z_][\w.-]*)=/g;
const header = /(^|[\s"'=])([A-Za-z][\w-]*)(\s*:\s*)(?=\S)/g;

function redactUserinfo(text: string): string {
  return text.replace(urlUserinfo, (match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    if (colon >= 0) return `${scheme}${userinfo.slice(0, colon)}:${REDACTED}@`;
    return tokenAsUserSchemes.test(scheme) && userinfo !== '' ? `${scheme}${REDACTED}@` : match;
  });
}

/** `a=1&password=x&b=2` → `a=1&password=***&b=2`; after `,` or `=` the rest of the word goes. */
function redactPairs(text: string): string {
  let out = '';
  let last = 0;
  pairStart.lastIndex = 0;
  for (let match = pairStart.exec(text); match !== null; match = pairStart.exec(text)) {
    const name = match[2] ?? '';
    const valueStart = match.index + match[0].length;
    if (valueStart < last || !isSecretName(name)) continue;
    const boundary = match[1] ?? '';
    let valueEnd: number;
    const quote = text[valueStart];
    if (quote === '"' || quote === "'") {
      const close = text.indexOf(quote, valueStart + 1);
      valueEnd = close < 0 ? text.length : close + 1;
    } else if ('?&;'.includes(boundary) && boundary !== '') {
      // Query strings and connection strings: the next separator ends the value.
      const rest = /[&;#\s"']/.exec(text.slice(valueStart));
      valueEnd = rest ? valueStart + rest.index : text.length;
    } else {
      const rest = /[\s"']/.exec(text.slice(valueStart));
      valueEnd = rest ? valueStart + rest.index : text.length;
    }
    const value = text.slice(valueStart, valueEnd);
    if (harmless(value)) continue;
    out += text.slice(last, valueStart) + hide(value);
    last = valueEnd;
    pairStart.lastIndex = valueEnd;
  }
  return out + text.slice(last);
}

/** `Authorization: Bearer x` → `Authorization: ***`, to the closing quote or the end. */
function redactHeaders(text: string): string {
  let out = '';
  let last = 0;
  header.lastIndex = 0;
  for (let match = header.exec(text); match !== null; match = header.exec(text)) {
    const name = match[2] ?? '';
    if (!isSecretName(name)) continue;
    const valueStart = match.index + match[0].length;
    if (valueStart < last) continue;
    const boundary = match[1] ?? '';
    const close = boundary === '"' || boundary === "'" ? text.indexOf(boundary, valueStart) : -1;
    const valueEnd = close < 0 ? text.length : close;
    out += text.slice(last, valueStart) + REDACTED;
    last = valueEnd;
    header.lastIndex = Math.max(valueEnd, valueStart + 1);
  }
  return out + text.slice(last);
}

/** Secrets inside one word or string, wherever they sit in it. */
function redactText(text: string): string {
  let out = redactUserinfo(text);
  out = out.replace(wellKnownTokens, REDACTED);
  out = out.replace(jsonPair, (match, quote: string, name: string, colon: string, value: string) =>
    isSecretName(name) && !harmless(value) ? `${quote}${name}${quote}${colon}${hide(value)}` : match,
  );
  out = redactPairs(out);
  return redactHeaders(out);
}

// ---- words of a command ----

const assignment = /^(-{0,2})([A-Za-z_][\w.-]*)=([\s\S]*)$/;
const flagName = /^-{1,2}([A-Za-z][\w.-]*)$/;
const looksLikeFlag = /^--?[A-Za-z]/;
const segmentSeparator = /^(?:;|&&|\|\||\||&)$/;
/** How deep quoted command lines inside command lines are followed (sh -c "bash -c '...'"). */
const MAX_NESTING = 16;

function basename(token: string): string {
  const unquoted = token.replace(/^['"]|['"]$/g, '');
  return unquoted.slice(unquoted.lastIndexOf('/') + 1);
}

function redactUserPass(value: string): string {
  const colon = value.indexOf(':');
  return colon < 0 ? value : `${value.slice(0, colon)}:${REDACTED}`;
}

/** The last part of a dotted or path-like setting name: `users.ci.token` → `token`. */
function settingLeaf(name: string): string {
  return name.slice(Math.max(name.lastIndexOf('.'), name.lastIndexOf('/'), name.lastIndexOf(':')) + 1);
}

/** One command (or segment of a shell string) at a time: the tool, its subcommand, positionals. */
interface Segment {
  tool: string | undefined;
  subcommand: string | undefined;
  /** Indexes of words that are neither flags nor flag values. */
  positionals: number[];
  htpasswdBatch: boolean;
  /** Index of redis-cli's AUTH command word. */
  redisAuth: number | undefined;
}

function newSegment(): Segment {
  return { tool: undefined, subcommand: undefined, positionals: [], htpasswdBatch: false, redisAuth: undefined };
}

function endSegment(out: string[], segment: Segment, end: number): void {
  const lastPositional = segment.positionals.at(-1);
  if (segment.htpasswdBatch && lastPositional !== undefined) out[lastPositional] = hide(out[lastPositional] ?? '');
  // AUTH <password> or AUTH <user> <password>: the last word is the password.
  if (segment.redisAuth !== undefined && end - 1 > segment.redisAuth) out[end - 1] = hide(out[end - 1] ?? '');
}

function redactTokens(tokens: string[], depth = 0): string[] {
  const out = tokens.slice();
  let segment = newSegment();
  let segmentStart = 0;
  for (let i = 0; i < out.length; i++) {
    const token = out[i] ?? '';
    if (segmentSeparator.test(token)) {
      endSegment(out, segment, i);
      segment = newSegment();
      segmentStart = i + 1;
      continue;
    }
    const { tool } = segment;
    const previous = i > segmentStart ? (tokens[i - 1] ?? '') : '';
    // The word after a shell's -c is a command line, even when it starts with NAME=value.
    if (/\s/.test(token) && tool !== undefined && shells.has(tool) && /^-[a-z]*c$/.test(previous)) {
      out[i] = redactString(token, depth + 1);
      continue;
    }
    const assigned = assignment.exec(token);
    if (assigned) {
      const [, dashes = '', name = '', value = ''] = assigned;
      const flag = `${dashes}${name}`;
      if (tool !== undefined && userPassFlags.get(tool)?.includes(flag)) out[i] = `${flag}=${redactUserPass(value)}`;
      else if (isSecretName(name) && !harmless(value)) out[i] = `${flag}=${hide(value)}`;
      else out[i] = `${flag}=${/\s/.test(value) ? redactString(value, depth + 1) : redactText(value)}`;
      continue;
    }
    // A word with spaces (a quoted script, a header, SQL, a conninfo string) is read as words.
    if (/\s/.test(token)) {
      out[i] = redactString(token, depth + 1);
      continue;
    }
    const name = basename(token);
    if (knownTools.has(name) && !token.startsWith('-')) {
      segment = { ...newSegment(), tool: name };
      continue;
    }

    const userFlags = tool === undefined ? undefined : userPassFlags.get(tool);
    if (userFlags) {
      if (userFlags.includes(token) && i + 1 < out.length) {
        out[i + 1] = redactUserPass(out[i + 1] ?? '');
        i++;
        continue;
      }
      // -ubob:pw
      const glued = userFlags.find((f) => f.length === 2 && token.startsWith(f) && token.length > 2);
      if (glued) {
        out[i] = `${glued}${redactUserPass(token.slice(2))}`;
        continue;
      }
    }

    const shortFlags = tool === undefined ? undefined : (toolSecretFlags.get(`${tool} ${segment.subcommand ?? ''}`) ?? toolSecretFlags.get(tool));
    if (shortFlags && /^-[A-Za-z]/.test(token) && !token.startsWith('--')) {
      const flag = shortFlags.flags.find((f) => token.startsWith(`-${f}`));
      if (flag !== undefined) {
        if (token.length > flag.length + 1) out[i] = `-${flag}${REDACTED}`;
        else if (!shortFlags.glued && i + 1 < out.length && !looksLikeFlag.test(out[i + 1] ?? '')) {
          out[i + 1] = hide(out[i + 1] ?? '');
          i++;
        }
        continue;
      }
    }
    if (tool === 'htpasswd' && /^-[a-zA-Z]*b/.test(token)) segment.htpasswdBatch = true;

    const flag = flagName.exec(token);
    if (flag) {
      const next = out[i + 1];
      if (flag[1] !== undefined && flag[1].length > 1 && isSecretName(flag[1]) && next !== undefined) {
        if (!looksLikeFlag.test(next) && !segmentSeparator.test(next) && !harmless(next)) {
          out[i + 1] = hide(next);
          i++;
        }
      }
      continue;
    }

    // A positional word.
    const previousPositional = segment.positionals.at(-1);
    segment.positionals.push(i);
    if (tool !== undefined && segment.subcommand === undefined) {
      segment.subcommand = token;
      out[i] = redactText(token);
      continue;
    }
    if (tool === 'vault' && segment.subcommand === 'login' && token !== '-' && segment.positionals.length === 2) {
      out[i] = hide(token);
      continue;
    }
    if (tool === 'redis-cli' && token.toUpperCase() === 'AUTH' && segment.redisAuth === undefined) {
      segment.redisAuth = i;
      continue;
    }
    const before = previousPositional === undefined ? '' : (tokens[previousPositional] ?? '').toLowerCase();
    // `aws configure set aws_secret_access_key X`, `npm config set //r/:_authToken X`, `git config user.password X`
    // (a setting's name, not a hyphenated subcommand such as `kubectl config set-credentials`)
    const isSetting = !token.includes('-') || /[.:/]/.test(token);
    if ((before === 'set' || before === 'config') && isSetting && isSecretName(settingLeaf(token)) && i + 1 < out.length && !looksLikeFlag.test(out[i + 1] ?? '')) {
      out[i + 1] = hide(out[i + 1] ?? '');
      segment.positionals.push(i + 1);
      i++;
      continue;
    }
    // SQL: PASSWORD 'x', IDENTIFIED BY 'x'.
    const next = out[i + 1] ?? '';
    if ((/^password$/i.test(token) || (/^by$/i.test(token) && /^identified$/i.test(previous))) && /^(['"])[\s\S]*\1;?$/.test(next)) {
      out[i + 1] = next.endsWith(';') ? `${hide(next.slice(0, -1))};` : hide(next);
      i++;
      continue;
    }
    out[i] = redactText(token);
  }
  endSegment(out, segment, out.length);
  return out;
}

/**
 * Splits a shell command string into words and separators, keeping quoted parts inside their
 * word, so `PGPASSWORD="a b" psql` is one assignment. Whitespace is kept to rebuild the string.
 */
function shellWords(text: string): { words: string[]; gaps: string[] } {
  const words: string[] = [];
  const gaps: string[] = [];
  let i = 0;
  let gap = '';
  while (i < text.length) {
    const c = text[i] ?? '';
    if (/\s/.test(c)) {
      gap += c;
      i++;
      continue;
    }
    gaps.push(gap);
    gap = '';
    let word = '';
    let quote: string | undefined;
    while (i < text.length) {
      const d = text[i] ?? '';
      if (quote) {
        word += d;
        if (d === quote) quote = undefined;
        i++;
        continue;
      }
      if (/\s/.test(d)) break;
      if (d === '"' || d === "'") quote = d;
      if ((d === ';' || d === '|' || d === '&') && word.length > 0) break;
      word += d;
      i++;
      if (d === ';' || d === '|' || d === '&') {
        while ((text[i] === '|' || text[i] === '&') && word.length < 2) word += text[i++];
        break;
      }
    }
    words.push(word);
  }
  gaps.push(gap);
  return { words, gaps };
}

function redactString(text: string, depth = 0): string {
  // A word that splits into itself (e.g. print('hello world')) would recurse forever.
  if (depth > MAX_NESTING) return redactText(text);
  const quoted = /^(['"])([\s\S]*)\1$/.exec(text);
  if (quoted) return `${quoted[1]}${redactString(quoted[2] ?? '', depth + 1)}${quoted[1]}`;
  const { words, gaps } = shellWords(text);
  if (words.length === 1 && words[0] === text) return redactText(text);
  const redacted = redactTokens(words, depth);
  let out = gaps[0] ?? '';
  for (let i = 0; i < redacted.length; i++) out += (redacted[i] ?? '') + (gaps[i + 1] ?? '');
  // What spans words: JSON objects and headers with spaces in them.
  return redactText(out);
}

function applyExtraPatterns(text: string, patterns: readonly RegExp[]): string {
  let out = text;
  for (const source of patterns) {
    const pattern = new RegExp(source.source, `${source.flags.replace(/[gd]/g, '')}gd`);
    let result = '';
    let last = 0;
    for (const match of out.matchAll(pattern)) {
      const groups = (match.indices ?? []).slice(1).filter((g): g is [number, number] => g !== undefined);
      const spans = groups.length > 0 ? groups : [[match.index, match.index + match[0].length] as [number, number]];
      for (const [start, end] of spans) {
        if (start < last) continue;
        result += out.slice(last, start) + REDACTED;
        last = end;
      }
      if (match[0].length === 0) pattern.lastIndex++;
    }
    out = result + out.slice(last);
  }
  return out;
}

/** The arguments with secrets replaced by ***. */
export function redactArgs(args: readonly string[], rules: RedactionRules = defaultRedaction): string[] {
  if (!rules.enabled) return args.slice();
  return redactTokens(args.slice());
}

/** The command line as one string (arguments joined by spaces, as ps shows it), redacted. */
export function redactCmdline(args: readonly string[], rules: RedactionRules = defaultRedaction): string {
  if (!rules.enabled) return args.join(' ');
  const joined = redactTokens(args.slice()).join(' ');
  return rules.extraPatterns.length === 0 ? joined : applyExtraPatterns(joined, rules.extraPatterns);
}
