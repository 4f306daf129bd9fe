// Secrets this process knows (values of options marked secret, passwords in URLs) and the scrub
// every log line, /metrics body and start-up error goes through, so none of them is printed
// even when an error message of a library quotes a URL, a command or a record.

/** Values shorter than this are not scrubbed by value (too likely to hit ordinary text). */
const MIN_SECRET_LENGTH = 4;
const MASK = '***';

const known = new Set<string>();

/** Remembers a secret value: redactSecrets masks it wherever it appears from now on. */
export function registerSecret(value: string | undefined): void {
  if (value === undefined || value.length < MIN_SECRET_LENGTH) return;
  known.add(value);
  // Also as it appears inside a JSON string (a log line) and percent-encoded (in a URL).
  known.add(JSON.stringify(value).slice(1, -1));
  known.add(encodeURIComponent(value));
}

/** Registers the password of a URL (`scheme://user:password@host`), if it has one. */
export function registerUrlSecret(url: URL | string): void {
  let parsed: URL;
  try {
    parsed = typeof url === 'string' ? new URL(url) : url;
  } catch {
    return;
  }
  if (parsed.password) {
    registerSecret(parsed.password);
    registerSecret(decodeURIComponent(parsed.password));
  }
}

export function knownSecrets(): ReadonlySet<string> {
  return known;
}

/** user:password@ in any URL. */
const urlUserinfo = /\b([a-z][a-z0-9+.-]*:\/\/)([^/\s:@"']*):([^/\s@"']+)@/gi;
/** Authorization header values. */
const authScheme = /\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=-]{8,}/g;
/**
 * NAME=value / --name=value / name: value where the name says secret (as on a command line or in
 * an environment dump). A JSON key ("token":) is left alone: the structured fields are redacted
 * by name in the logger.
 */
const namedSecret = /([\w.-]*(?:passw(?:or)?d|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential)[\w.-]*)(=|:\s?)(?!\*\*\*)([^\s"',;&]+)/gi;

/**
 * Masks every known secret, URL passwords, bearer tokens and NAME=value pairs whose name says
 * secret. Idempotent; ordinary text passes unchanged.
 */
export function redactSecrets(text: string): string {
  let out = text;
  for (const secret of known) if (out.includes(secret)) out = out.split(secret).join(MASK);
  return out
    .replace(urlUserinfo, (_, scheme: string, user: string) => `${scheme}${user}:${MASK}@`)
    .replace(authScheme, (_, scheme: string, space: string) => `${scheme}${space}${MASK}`)
    .replace(namedSecret, (_, name: string, separator: string) => `${name}${separator}${MASK}`);
}
