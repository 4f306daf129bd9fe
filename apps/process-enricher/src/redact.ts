// Command-line redaction, applied before a record leaves the node: values of secret-looking
// options and NAME=value pairs, password flags of common tools, user:pass in URLs and curl's -u.
// Rules are documented in apps/process-enricher/README.md; keep the two in step.

export const REDACTED = '***';

export interface RedactionRules {
  enabled: boolean;
  /** Extra patterns: a match is replaced by ***, or only its capture groups when it has some. */
  extraPatterns: readonly RegExp[];
}

export const defaultRedaction: RedactionRules = { enabled: true, extraPatterns: [] };

/**
 * Names whose values are secrets. Broad on purpose: showing `--keyboard=***` costs little,
 * showing a password costs a lot.
 */
const secretName = /pass|pwd|token|secret|key|credential|creds|auth|cookie|session|bearer|jwt|signature|private/i;

/** Short flags whose value is a password, per tool (basename of the program). */
const toolSecretFlags = new Map<string, readonly string[]>();
for (const tool of ['mysql', 'mysqldump', 'mysqladmin', 'mysqlimport', 'mysqlshow', 'mysqlcheck', 'mysqlpump', 'mysqlsh', 'mysqlbinlog', 'mariadb', 'mariadb-dump', 'mariadb-admin', 'mariadb-import', 'mariadb-check', 'mongo', 'mongosh', 'mongodump', 'mongorestore', 'mongoexport', 'mongoimport', 'sshpass', 'zip', 'unzip', '7z']) {
  toolSecretFlags.set(tool, tool === 'zip' || tool === 'unzip' ? ['P'] : ['p']);
}
toolSecretFlags.set('redis-cli', ['a']);
toolSecretFlags.set('ldapsearch', ['w']);
toolSecretFlags.set('ldapadd', ['w']);
toolSecretFlags.set('ldapmodify', ['w']);
toolSecretFlags.set('ldapdelete', ['w']);
toolSecretFlags.set('openssl', ['k']);

/** Tools whose user flag takes `user:password`. */
const userPassFlags = new Map<string, readonly string[]>([
  ['curl', ['-u', '--user', '-U', '--proxy-user']],
  ['http', ['-a', '--auth']],
  ['https', ['-a', '--auth']],
  ['xh', ['-a', '--auth']],
]);

const urlUserinfo = /([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)([^/\s:@]*):([^@\s/]*)@/g;
const headerSecret = /((?:^|[\s"'])[\w-]*(?:authorization|token|secret|api[-_]?key|password|cookie)[\w-]*\s*:\s)\s*(.+)$/i;
const assignment = /^(-{0,2})([A-Za-z_][\w.-]*)=([\s\S]*)$/;
const longOrShortFlag = /^-{1,2}([A-Za-z][\w.-]*)$/;
const looksLikeFlag = /^--?[A-Za-z]/;
const segmentSeparator = /^(?:;|&&|\|\||\||&)$/;

function basename(token: string): string {
  const unquoted = token.replace(/^['"]|['"]$/g, '');
  return unquoted.slice(unquoted.lastIndexOf('/') + 1);
}

function redactInText(text: string): string {
  let out = text.replace(urlUserinfo, (_m, scheme: string, user: string) => `${scheme}${user}:${REDACTED}@`);
  const header = headerSecret.exec(out);
  if (header?.[1] !== undefined) out = `${out.slice(0, header.index)}${header[1]}${REDACTED}`;
  return out;
}

/** Redacts one command's arguments (or the words of one `sh -c` string). */
/** How deep quoted command lines inside command lines are followed (sh -c "bash -c '...'"). */
const MAX_NESTING = 16;

function redactTokens(tokens: string[], depth = 0): string[] {
  const out = tokens.slice();
  let tool: string | undefined;
  for (let i = 0; i < out.length; i++) {
    const token = out[i] ?? '';
    if (segmentSeparator.test(token)) {
      tool = undefined;
      continue;
    }
    // The word after a shell's -c is a command line, even when it starts with NAME=value.
    const isCommandString = /\s/.test(token) && /^-[a-z]*c$/.test(out[i - 1] ?? '');
    const assigned = isCommandString ? null : assignment.exec(token);
    if (assigned && secretName.test(assigned[2] ?? '')) {
      const value = assigned[3] ?? '';
      if (userPassFlags.get(tool ?? '')?.includes(`${assigned[1]}${assigned[2]}`)) out[i] = `${assigned[1]}${assigned[2]}=${redactUserPass(value)}`;
      else out[i] = `${assigned[1]}${assigned[2]}=${REDACTED}`;
      continue;
    }
    // A word with spaces (sh -c "...", a quoted script) holds a command line of its own.
    if (/\s/.test(token)) {
      out[i] = redactString(token, depth + 1);
      continue;
    }
    const name = basename(token);
    if (toolSecretFlags.has(name) || userPassFlags.has(name)) {
      tool = name;
      continue;
    }
    out[i] = redactInText(token);

    const userFlags = tool === undefined ? undefined : userPassFlags.get(tool);
    if (userFlags) {
      if (assigned && userFlags.includes(`${assigned[1]}${assigned[2]}`)) {
        out[i] = `${assigned[1]}${assigned[2]}=${redactUserPass(assigned[3] ?? '')}`;
        continue;
      }
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

    const shortFlags = tool === undefined ? undefined : toolSecretFlags.get(tool);
    if (shortFlags) {
      const flag = shortFlags.find((f) => token === `-${f}` || (token.startsWith(`-${f}`) && !token.startsWith('--')));
      if (flag !== undefined) {
        if (token === `-${flag}`) {
          if (i + 1 < out.length && !looksLikeFlag.test(out[i + 1] ?? '')) {
            out[i + 1] = REDACTED;
            i++;
          }
        } else {
          out[i] = `-${flag}${REDACTED}`;
        }
        continue;
      }
    }

    const flag = longOrShortFlag.exec(token);
    if (flag && flag[1] !== undefined && flag[1].length > 1 && secretName.test(flag[1]) && i + 1 < out.length) {
      const next = out[i + 1] ?? '';
      if (!looksLikeFlag.test(next) && !segmentSeparator.test(next)) {
        out[i + 1] = REDACTED;
        i++;
      }
    }
  }
  return out;
}

function redactUserPass(value: string): string {
  const colon = value.indexOf(':');
  return colon < 0 ? value : `${value.slice(0, colon)}:${REDACTED}`;
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
  if (depth > MAX_NESTING) return redactInText(text);
  const quoted = /^(['"])([\s\S]*)\1$/.exec(text);
  if (quoted) return `${quoted[1]}${redactString(quoted[2] ?? '', depth + 1)}${quoted[1]}`;
  const { words, gaps } = shellWords(text);
  if (words.length === 1 && words[0] === text) return redactInText(text);
  const redacted = redactTokens(words, depth);
  let out = gaps[0] ?? '';
  for (let i = 0; i < redacted.length; i++) out += (redacted[i] ?? '') + (gaps[i + 1] ?? '');
  return redactInText(out);
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
