// The joiner's Redis state machine as Lua scripts: each runs atomically on the keys of ONE
// conversation group (one hash tag, so one Redis Cluster slot). See README.md for the protocol.
//
// Keys of a group (tag = protocol/initiator ip/initiator port):
//   kappa:{tag}:meta  HASH  "src"        -> "<storedAtMs>:<Endpoint bytes>"  initiator's own end
//                           "dst|<conv>" -> "<storedAtMs>:<Endpoint bytes>"  responder's own end
//   kappa:{tag}:rec   HASH  recordKey -> encoded FlowRecord (pending or claimed)
//   kappa:{tag}:st    HASH  recordKey -> JSON {v, c, d, a, o, l, k}: vantage, conversations it
//                           waits under, deadline, arrival, claim owner, lease end, claim kind
//   kappa:{tag}:seen  ZSET  recordKey -> arrivalMs*4 + outcome (0 went pending, 1 emitted with
//                           its input batch, 2 finalized): what a redelivered input must not redo.

const common = `
local function fresh(value, now, ttl)
  if not value then return nil end
  local i = string.find(value, ':', 1, true)
  if not i then return nil end
  if tonumber(string.sub(value, 1, i - 1)) + ttl < now then return nil end
  return string.sub(value, i + 1)
end
local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^\\n]+') do out[#out + 1] = part end
  return out
end
`;

/**
 * A record arrives from the input. KEYS meta, rec, st, seen.
 * ARGV now, recordKey, vantage (1 src | 2 dst), conversations (\\n-separated), local Endpoint,
 * record bytes, joinWaitMs, owner (input claim id), metadataTtlMs, replayMs, inputLeaseMs.
 * Returns {outcome, peerEndpoint|'', deadlineMs, key1, record1, arrived1, key2, ...}: outcome is
 * 'joined' (emit now with the peer's end), 'pending' (stored; schedule it at deadlineMs),
 * 'replayed-pending' (seen before, emits nothing; re-schedule it when deadlineMs is not 0) or
 * 'emit' (was emitted with this input before: emit again, with the peer's end if still known).
 * The triples are the peer's pending records this arrival claimed for its input batch.
 */
export const arriveLua = `${common}
local meta, rec, st, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local key = ARGV[2]
local v = tonumber(ARGV[3])
local convs = split(ARGV[4])
local owner = ARGV[8]
local ttl = tonumber(ARGV[9])
local replay = tonumber(ARGV[10])
redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. ((now - replay) * 4))
local mark = redis.call('ZSCORE', seen, key)
local outcome = nil
if mark then outcome = tonumber(mark) % 4 end
-- A redelivered input: redo nothing, but hand back exactly what this owner claimed before, so the
-- republished batch (same Nats-Msg-Id) carries the same records. Never claim anything new then:
-- the first attempt may already be published, and JetStream would drop the new records with it.
local result = {'', '', '0'}
local replayed = false
local waiting = redis.call('HGET', st, key)
if waiting then
  replayed = true
  result[1] = 'replayed-pending'
  local s = cjson.decode(waiting)
  if s.o == '' then result[3] = tostring(s.d) end
elseif outcome == 0 or outcome == 2 then
  replayed = true
  result[1] = 'replayed-pending'
elseif outcome == 1 then
  replayed = true
  result[1] = 'emit'
end

if not replayed then
  local stamp = tostring(now) .. ':'
  if v == 1 then
    redis.call('HSET', meta, 'src', stamp .. ARGV[5])
  else
    for _, c in ipairs(convs) do redis.call('HSET', meta, 'dst|' .. c, stamp .. ARGV[5]) end
  end
  if redis.call('HLEN', meta) > 16 then
    local all = redis.call('HGETALL', meta)
    for i = 1, #all, 2 do
      if not fresh(all[i + 1], now, ttl) then redis.call('HDEL', meta, all[i]) end
    end
  end
  redis.call('PEXPIRE', meta, ttl)
end

local peer
if v == 1 then peer = fresh(redis.call('HGET', meta, 'dst|' .. convs[1]), now, ttl)
else peer = fresh(redis.call('HGET', meta, 'src'), now, ttl) end
result[2] = peer or ''

local states = redis.call('HGETALL', st)
for i = 1, #states, 2 do
  local k = states[i]
  local s = cjson.decode(states[i + 1])
  local take = (s.o == owner)
  if not take and not replayed and s.o == '' and s.v ~= v then
    take = (v == 1)
    if not take then
      for _, c in ipairs(convs) do if c == s.c[1] then take = true end end
    end
    if take then
      s.o = owner; s.k = 'i'; s.l = now + tonumber(ARGV[11])
      redis.call('HSET', st, k, cjson.encode(s))
    end
  end
  if take then
    result[#result + 1] = k
    result[#result + 1] = redis.call('HGET', rec, k)
    result[#result + 1] = tostring(s.a)
  end
end

if not replayed then
  if peer then
    result[1] = 'joined'
    redis.call('ZADD', seen, now * 4 + 1, key)
  else
    result[1] = 'pending'
    result[3] = tostring(now + tonumber(ARGV[7]))
    redis.call('HSET', rec, key, ARGV[6])
    redis.call('HSET', st, key, cjson.encode({v = v, c = convs, d = now + tonumber(ARGV[7]), a = now, o = '', l = 0, k = ''}))
    redis.call('ZADD', seen, now * 4, key)
  end
end
redis.call('PEXPIRE', seen, replay)
return result
`;

/**
 * Removes the records a claim owner has published. KEYS rec, st, seen.
 * ARGV now, replayMs, n, then n pairs (recordKey, owner), then the keys of the owner's own
 * input records to mark finalized. Returns the number of records removed.
 */
export const finalizeLua = `
local rec, st, seen = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local removed = 0
for i = 0, n - 1 do
  local key, owner = ARGV[4 + i * 2], ARGV[5 + i * 2]
  local raw = redis.call('HGET', st, key)
  if raw and cjson.decode(raw).o == owner then
    redis.call('HDEL', st, key)
    redis.call('HDEL', rec, key)
    redis.call('ZADD', seen, now * 4 + 2, key)
    removed = removed + 1
  end
end
for i = 4 + n * 2, #ARGV do redis.call('ZADD', seen, now * 4 + 2, ARGV[i]) end
redis.call('PEXPIRE', seen, tonumber(ARGV[2]))
return removed
`;

/**
 * The sweeper claims one due record. KEYS meta, rec, st.
 * ARGV now, recordKey, owner (sweep claim id), leaseMs, metadataTtlMs.
 * Returns {'claimed', record, peerEndpoint|'', arrivedMs} | {'gone'} | {'busy', leaseEndMs} |
 * {'notdue', deadlineMs}: the sweeper moves a busy or early member to that time in the schedule.
 * A record claimed by a live claim is 'busy'; one claimed by ANOTHER sweep round is never taken
 * (that round's own takeover republishes it under the same message id); an input claim whose
 * lease ran out (its batch was never redelivered) is taken over.
 */
export const sweepClaimLua = `${common}
local meta, rec, st = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local key, owner = ARGV[2], ARGV[3]
local raw = redis.call('HGET', st, key)
if not raw then return {'gone'} end
local s = cjson.decode(raw)
if s.o ~= '' and s.o ~= owner then
  if s.k == 's' or s.l > now then return {'busy', tostring(s.l)} end
elseif s.o == '' and s.d > now then
  return {'notdue', tostring(s.d)}
end
s.o = owner; s.k = 's'; s.l = now + tonumber(ARGV[4])
redis.call('HSET', st, key, cjson.encode(s))
local peer
if s.v == 1 then peer = fresh(redis.call('HGET', meta, 'dst|' .. s.c[1]), now, tonumber(ARGV[5]))
else peer = fresh(redis.call('HGET', meta, 'src'), now, tonumber(ARGV[5])) end
return {'claimed', redis.call('HGET', rec, key), peer or '', tostring(s.a)}
`;

/**
 * Takes over a sweep round whose owner stopped renewing it. KEYS index.
 * ARGV roundId, now, leaseMs. Returns 1 when this caller now owns the round.
 */
export const takeRoundLua = `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return 1
`;
